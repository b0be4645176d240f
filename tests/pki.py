"""A throwaway certificate authority made with the ``openssl`` command, for TLS tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl")


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=folder, check=True, capture_output=True, timeout=60)


class Pki:
    """``ca.crt``, a server certificate for 127.0.0.1/localhost, and client certificates."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=nspvend test CA", "-keyout", "ca.key", "-out", "ca.crt")
        self.ca = folder / "ca.crt"
        self.server_cert, self.server_key = self.issue("localhost",
                                                       "subjectAltName=IP:127.0.0.1,DNS:localhost")

    def issue(self, common_name: str, extensions: str = "") -> tuple[Path, Path]:
        """A key and a certificate signed by the CA, for ``common_name``."""
        key, csr, cert = (self.folder / f"{common_name}.{ext}" for ext in ("key", "csr", "crt"))
        _openssl(self.folder, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}",
                 "-keyout", key.name, "-out", csr.name)
        extra: list[str] = []
        if extensions:
            (self.folder / f"{common_name}.ext").write_text(extensions + "\n")
            extra = ["-extfile", f"{common_name}.ext"]
        _openssl(self.folder, "x509", "-req", "-in", csr.name, "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", cert.name, *extra)
        return cert, key
