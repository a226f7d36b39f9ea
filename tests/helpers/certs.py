"""Certificates made in-process with `cryptography`: a CA, intermediates, leaves for any
names, key type and validity window — expired, mismatched and misordered ones included.

Validity is relative to a `now` the test chooses, so no test depends on today's date.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)  # a fixed "now" for tests


def new_key(kind: str = "ec", bits: int = 2048) -> Any:
    """A private key: "ec" (P-256), "rsa" (`bits`) or "ed25519"."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Any

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        algorithm: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm
        )


def _sign_hash(key: Any) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_cert(
    names: Sequence[str] = (),
    *,
    issuer: Issued | None = None,
    key: Any = None,
    common_name: str | None = None,
    now: datetime = NOW,
    not_before: timedelta = timedelta(days=-1),
    not_after: timedelta = timedelta(days=90),
    ca: bool = False,
    san: bool = True,
    ocsp_url: str | None = None,
    client: bool = False,
) -> Issued:
    """A certificate for `names` (DNS names, or IP addresses), valid from now+not_before
    to now+not_after, signed by `issuer` (self-signed without one)."""
    key = key or new_key()
    cn = common_name or (names[0] if names else "nginxgen test")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names and san:
        entries: list[x509.GeneralName] = []
        for name in names:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                entries.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, _sign_hash(signer))
    return Issued(cert, key)


def make_ca(name: str = "nginxgen test CA", *, issuer: Issued | None = None, **kw: Any) -> Issued:
    """A CA (or, with `issuer`, an intermediate CA)."""
    kw.setdefault("not_after", timedelta(days=3650))
    return make_cert((), common_name=name, issuer=issuer, ca=True, **kw)


def write_pair(
    directory: Path, name: str, chain: Sequence[Issued], key: Issued | None = None
) -> tuple[Path, Path]:
    """`name.pem` (the chain, in the order given) and `name.key` (of `key`, default the
    first), readable by nginx's workers."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(c.pem() for c in chain))
    key_path.write_bytes((key or chain[0]).key_pem())
    return cert_path, key_path
