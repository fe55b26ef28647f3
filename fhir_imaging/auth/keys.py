"""Signing keys as JSON Web Keys: the public JWK of a key, its RFC 7638 thumbprint (the ``kid`` when none is given),
a private key read from PEM, and the algorithm a key signs with. The cryptography is PyJWT's and cryptography's;
this module only names and converts keys.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html) asks clients to sign their
assertions with RS384 or ES384: an RSA key signs with RS384, a P-384 key with ES384.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ASSERTION_ALGORITHMS = ("RS384", "ES384")  # what SMART Backend Services clients sign with
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}  # RFC 7638 §3.2, in this order

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (base64url, no padding). ValueError for another key type."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError("only RSA and EC keys with all their public members have a thumbprint")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signing_algorithm(key: PrivateKey) -> str:
    """RS384 for an RSA key, ES384 for a P-384 key; ValueError for anything else."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (2048 at least)")
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise ValueError("the key must be an RSA key (RS384) or an EC key on the P-384 curve (ES384)")


def public_jwk(key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """The public half of ``key`` as a JWK with ``alg``, ``use: sig`` and ``kid`` (default: its thumbprint)."""
    algorithm = signing_algorithm(key)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(key.public_key()))
    jwk.update({"kid": kid or thumbprint(jwk), "alg": algorithm, "use": "sig"})
    return jwk


def load_private_key(pem: bytes) -> PrivateKey:
    """A private key from PEM (PKCS#8 or the traditional formats, unencrypted); ValueError when it is not one we
    can sign assertions with."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the key must be an RSA or EC private key")
    signing_algorithm(key)
    return key


def new_server_key() -> bytes:
    """A fresh P-384 private key (ES384), as PKCS#8 PEM: the key this server signs its access tokens with."""
    key = ec.generate_private_key(ec.SECP384R1())
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
