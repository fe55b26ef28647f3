"""Authorization (SMART on FHIR): bearer tokens verified against an OpenID issuer, SMART scopes, and the ``Access``
a caller carries into the service layer, where one check guards every interaction."""
