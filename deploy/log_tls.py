"""The controller's log CA (R-LOG over TLS): made once, then a key and certificate per host.

Kept in ``$BAOMI_STATE_DIR/log-ca/`` (0700; keys 0600), reused on every run so a re-apply
changes nothing.  The CA is made by the collector's own CA builder
(:func:`baomi.collector.tls.make_ca_and_server`; its server half is not used); each host's
certificate names the host (DNS) and its inventory address (IP), for both TLS roles: the log
host proves its name to senders (``x509/name``), senders prove they hold a certificate of
this CA (``x509/certvalid``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from baomi.collector.tls import _key_pem, make_ca_and_server, write_private
from baomi.records import state_dir


def folder() -> Path:
    path = state_dir() / "log-ca"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def ca() -> tuple[bytes, bytes]:
    """(ca.pem, ca.key), made on first use."""
    base = folder()
    if not (base / "ca.key").exists():
        made = make_ca_and_server([], [])
        write_private(base / "ca.key", made["ca.key"])
        (base / "ca.pem").write_bytes(made["ca.pem"])
    return (base / "ca.pem").read_bytes(), (base / "ca.key").read_bytes()


def host_pair(name: str, address: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of one host, issued on first use."""
    base = folder()
    cert_path, key_path = base / f"{name}.pem", base / f"{name}.key"
    if not key_path.exists():
        ca_pem, ca_key_pem = ca()
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # noqa: S101 (narrowing)
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        with contextlib.suppress(ValueError):  # a name, not an address: DNS is enough
            sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        tmp = key_path.with_suffix(f".tmp{os.getpid()}")
        write_private(tmp, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.rename(key_path)
    return cert_path.read_bytes(), key_path.read_bytes()
