"""HTTPS: ``serve --tls-cert --tls-key`` answers over TLS (a certificate made here for 127.0.0.1), and one of the two
without the other refuses to start."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.server import free_port, stop_process


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_the_server_answers_over_https(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    port = free_port()
    database = f"sqlite:///{tmp_path / 'tls.db'}"
    command = [sys.executable, "-m", "fhir_imaging", "serve", "--port", str(port), "--database", database,
               "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        base = f"https://127.0.0.1:{port}/baseR4"
        deadline, answer = time.monotonic() + 20, None
        while answer is None and time.monotonic() < deadline:
            assert process.poll() is None, "the server exited"
            try:
                answer = httpx.get(f"{base}/metadata", verify=trusted, timeout=2)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}, verify=trusted)
        assert created.status_code == 201 and created.headers["location"].startswith("https://127.0.0.1")
        try:
            httpx.get(f"http://127.0.0.1:{port}/baseR4/metadata", timeout=2)
            plain_refused = False
        except httpx.TransportError:
            plain_refused = True
        assert plain_refused
    finally:
        stop_process(process)


def test_a_certificate_without_its_key_refuses_to_start(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "fhir_imaging", "serve", "--tls-cert", str(cert)], capture_output=True, timeout=60
    )
    assert done.returncode == 2 and b"--tls-key" in done.stderr
