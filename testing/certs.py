"""Certificates made for a test with ``openssl``: a CA, a server certificate and a client certificate.

``server`` names ``localhost`` and ``127.0.0.1`` (kombu connects to
``127.0.0.1`` when told ``localhost``, and verifies that name);
``localhost_only`` names ``localhost`` alone, so a client that connects to
``127.0.0.1`` must refuse it (the "wrong hostname" case); ``other_ca`` signs
nothing of ours (the "wrong CA" case).
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    localhost_only_cert: Path
    localhost_only_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=workqueue test {name}",
        "-keyout", str(key), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, request = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(directory / f"{name}.ext"), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def make(directory: Path) -> Certificates:
    """A fresh CA and certificates in ``directory`` (about 0.3 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server = _leaf(directory, "server", ca, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    localhost_only = _leaf(
        directory, "localhost-only", ca, "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    client = _leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    other_ca = _ca(directory, "other-ca")
    return Certificates(ca[0], *server, *localhost_only, *client, other_ca[0])
