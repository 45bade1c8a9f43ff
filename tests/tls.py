"""Throwaway TLS certificates for the tests: a self-signed CA and a server certificate it signs.

`make_certificates` runs the openssl program (the `cryptography` package is not a dependency)
with argument lists and no network access. The server certificate names `localhost` and
`127.0.0.1`, so clients that check the host name accept it for either address. Each call
makes a new CA, so the CA of one call is a wrong CA for the server certificate of another.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Days of validity; the files live only as long as one test session.
VALID_DAYS: Final = "2"
# P-256 keys take milliseconds to generate, where RSA-2048 keys take about 100 ms each.
KEY_OPTIONS: Final = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
CA_EXTENSIONS: Final = ("-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
SERVER_EXTENSIONS: Final = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one throwaway CA and of a server certificate that it signed."""

    directory: Path
    ca_certificate: Path
    certificate: Path
    key: Path

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_certificates(prefix: str = "thehat-tls-") -> CertificateFiles:
    """Make a CA and a server certificate in a new directory under the system's temp directory.

    The directory and files, the private keys included, are readable by every user, because
    ngircd reads them after it drops root for "nobody" (pytest's tmp_path is private to
    root). Raises RuntimeError when openssl is missing or fails.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl program is not installed; it makes the test certificates")
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    files = CertificateFiles(directory, directory / "ca.pem", directory / "server.pem",
                             directory / "server-key.pem")
    ca_key = directory / "ca-key.pem"
    request = directory / "server.csr"
    extensions = directory / "server-extensions.cnf"
    extensions.write_text(SERVER_EXTENSIONS, encoding="ascii")

    _run(openssl, "req", "-x509", *KEY_OPTIONS, "-days", VALID_DAYS,
         "-subj", f"/CN=thehat test CA {directory.name}", *CA_EXTENSIONS,
         "-keyout", str(ca_key), "-out", str(files.ca_certificate))
    _run(openssl, "req", "-new", *KEY_OPTIONS, "-subj", "/CN=localhost",
         "-keyout", str(files.key), "-out", str(request))
    _run(openssl, "x509", "-req", "-in", str(request), "-CA", str(files.ca_certificate),
         "-CAkey", str(ca_key), "-CAcreateserial", "-days", VALID_DAYS,
         "-extfile", str(extensions), "-out", str(files.certificate))

    for path in directory.iterdir():
        path.chmod(0o644)
    return files


def _run(*arguments: str) -> None:
    result = subprocess.run(arguments, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments[:3])} failed with exit status "
                           f"{result.returncode}: {result.stderr.decode(errors='replace')}")
