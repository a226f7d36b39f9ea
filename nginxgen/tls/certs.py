"""Certificate checks that `render` runs before nginx ever sees a certificate.

nginx -t catches a key that does not match, but not a certificate that expired last night,
one that does not cover a host's names, or a chain in the wrong order (nginx sends the
file as it is; browsers then fail). These checks read the PEM files with the
`cryptography` library — never a subprocess — and return findings that name the spec
line. The clock is an argument: expiry is a fact about `now`, and tests choose it.

What is not promised: no path to a trusted root is built (the gateway cannot know its
clients' trust stores) and revocation is not checked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from ..spec import Spec

# Warn this long before a certificate expires; expired or not yet valid fails.
EXPIRY_WARNING = timedelta(days=14)
MIN_RSA_BITS = 2048  # Debian's OpenSSL (security level 2) refuses fewer

Level = Literal["error", "warning"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class CertFinding:
    level: Level
    where: str  # "nginxgen.yaml:12: hosts[0].tls.cert"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class CertProblem(Exception):
    """A file that cannot be used at all; str() is one sentence."""


def check_certificates(spec: Spec, now: datetime) -> list[CertFinding]:
    """Every certificate the spec names: each host's chain and key, and the CA bundles
    and client certificates of upstream TLS. Errors must stop a render; warnings are
    for the operator."""
    out: list[CertFinding] = []
    for vh in spec.virtual_hosts:
        if vh.tls is not None:
            out += check_server_pair(
                vh.tls.cert,
                vh.tls.key,
                vh.server_names,
                now,
                where=spec.where((*vh.key, "tls", "cert")),
                key_where=spec.where((*vh.key, "tls", "key")),
                ocsp_stapling=vh.tls.ocsp_stapling,
            )
    checked: set[tuple[str | None, ...]] = set()
    routes = [(vh, i, r) for vh in spec.virtual_hosts for i, r in enumerate(vh.routes)]
    for vh, i, route in routes:
        up = route.upstream_tls
        if up is None:
            continue
        files = (up.ca, up.client_cert, up.client_key)
        if files in checked:  # routes to one service share one upstream_tls
            continue
        checked.add(files)
        key = (*vh.route_key(i), "upstream_tls")
        if up.ca is not None:
            out += check_ca_bundle(up.ca, now, where=spec.where((*key, "ca")))
        if up.client_cert is not None and up.client_key is not None:
            out += check_client_pair(
                up.client_cert,
                up.client_key,
                now,
                where=spec.where((*key, "client_cert")),
                key_where=spec.where((*key, "client_key")),
            )
    return out


def certificate_files(spec: Spec) -> tuple[str, ...]:
    """The PEM files a rendered config reads: a change to one needs a reload."""
    files: list[str] = []
    for vh in spec.virtual_hosts:
        if vh.tls is not None:
            files += [vh.tls.cert, vh.tls.key]
        for r in vh.routes:
            up = r.upstream_tls
            if up is not None:
                files += [f for f in (up.ca, up.client_cert, up.client_key) if f is not None]
    return tuple(dict.fromkeys(files))


# --- one pair, one bundle ---------------------------------------------------------------


def check_server_pair(
    cert_path: str,
    key_path: str,
    server_names: Iterable[str],
    now: datetime,
    *,
    where: str,
    key_where: str | None = None,
    ocsp_stapling: bool = False,
) -> list[CertFinding]:
    """A host's chain and key: they match, the chain is in order, the leaf covers every
    server name, and every certificate in it is valid at `now`."""
    try:
        chain = load_chain(cert_path)
    except CertProblem as exc:
        return [CertFinding("error", where, str(exc))]
    out = _pair_findings(chain, cert_path, key_path, where, key_where or where)
    if out:
        return out  # names and dates of a chain that cannot be served say nothing useful
    leaf = chain[0]
    missing = [n for n in server_names if not certificate_covers(leaf, n)]
    if missing:
        names = ", ".join(sorted(certificate_names(leaf))) or "no names"
        if not _has_san(leaf):
            out.append(
                CertFinding(
                    "error",
                    where,
                    f"the certificate in {cert_path} has no subjectAltName, which browsers "
                    "require (they ignore the common name)",
                )
            )
        else:
            out.append(
                CertFinding(
                    "error",
                    where,
                    f"the certificate in {cert_path} does not cover {', '.join(missing)} "
                    f"(it names {names})",
                )
            )
    out += validity_findings(chain, cert_path, now, where)
    if ocsp_stapling:
        out += _stapling_findings(chain, cert_path, where)
    return out


def check_client_pair(
    cert_path: str, key_path: str, now: datetime, *, where: str, key_where: str | None = None
) -> list[CertFinding]:
    """The certificate the gateway shows its backends (mutual TLS)."""
    try:
        chain = load_chain(cert_path)
    except CertProblem as exc:
        return [CertFinding("error", where, str(exc))]
    out = _pair_findings(chain, cert_path, key_path, where, key_where or where)
    return out or validity_findings(chain, cert_path, now, where)


def check_ca_bundle(path: str, now: datetime, *, where: str) -> list[CertFinding]:
    """CAs to verify backends with: readable PEM; all of them expired is an error."""
    try:
        bundle = load_chain(path)
    except CertProblem as exc:
        return [CertFinding("error", where, str(exc))]
    when = _aware(now)
    if all(c.not_valid_after_utc <= when for c in bundle):
        return [CertFinding("error", where, f"every CA certificate in {path} has expired")]
    return []


def _pair_findings(
    chain: list[x509.Certificate], cert_path: str, key_path: str, where: str, key_where: str
) -> list[CertFinding]:
    try:
        key = load_key(key_path)
    except CertProblem as exc:
        return [CertFinding("error", key_where, str(exc))]
    if not key_matches(chain[0], key):
        later = next((i for i, c in enumerate(chain[1:], 2) if key_matches(c, key)), None)
        if later is not None:
            return [
                CertFinding(
                    "error",
                    where,
                    f"the key belongs to certificate {later} in {cert_path}, not to the first: "
                    "put the leaf first, then the certificates that issued it",
                )
            ]
        return [
            CertFinding(
                "error",
                key_where,
                f"the key in {key_path} does not belong to the certificate in {cert_path} "
                f"({_subject(chain[0])})",
            )
        ]
    problem = chain_order_problem(chain, cert_path)
    return [CertFinding("error", where, problem)] if problem else []


# --- building blocks --------------------------------------------------------------------


def load_chain(path: str) -> list[x509.Certificate]:
    data = _read(path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertProblem(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertProblem(f"{path} holds a certificate that cannot be read ({exc})") from None


def load_key(path: str) -> PrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise CertProblem(
            f"the key in {path} is encrypted; nginx would ask for its passphrase at every "
            "start: give it unencrypted, readable by root only"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertProblem(f"{path} holds no PEM private key that can be read") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertProblem(
                f"the RSA key in {path} has {key.key_size} bits; OpenSSL refuses fewer than "
                f"{MIN_RSA_BITS}"
            )
        return key
    if isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        return key
    raise CertProblem(f"the key in {path} is {type(key).__name__}; use RSA, ECDSA or Ed25519")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertProblem(f"cannot read {path}: {exc.strerror or exc}") from None


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    def spki(public: object) -> bytes:
        return public.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    try:
        return spki(cert.public_key()) == spki(key.public_key())
    except (ValueError, UnsupportedAlgorithm):
        return False


def chain_order_problem(chain: list[x509.Certificate], path: str) -> str | None:
    """nginx sends the file as written: each certificate must be followed by its issuer."""
    for i in range(len(chain) - 1):
        child, parent = chain[i], chain[i + 1]
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return (
                f"certificate {i + 2} in {path} ({_subject(parent)}) did not issue certificate "
                f"{i + 1} ({_subject(child)}): order the chain leaf first, each certificate "
                "followed by the one that issued it"
            )
    return None


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in the subjectAltName, lowercase."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    names += [ip.compressed for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def _has_san(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return True


def certificate_covers(cert: x509.Certificate, server_name: str) -> bool:
    return name_covered(certificate_names(cert), server_name)


def name_covered(patterns: Iterable[str], server_name: str) -> bool:
    """Whether a certificate naming `patterns` serves `server_name` (RFC 6125 6.4.3).

    A wildcard is a whole leftmost label: `*.b.test` covers `x.b.test`, not `b.test` nor
    `y.x.b.test`. A server name that is itself a wildcard needs that same wildcard.
    """
    name = server_name.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if ip is not None:
            if pattern == ip.compressed:
                return True
            continue
        if pattern == name:
            return True
        if name.startswith("*."):
            continue  # a wildcard host needs the wildcard itself, matched above
        if pattern.startswith("*.") and "." in name:
            label, _, rest = name.partition(".")
            if label and rest == pattern[2:]:
                return True
    return False


def validity_findings(
    chain: list[x509.Certificate], path: str, now: datetime, where: str
) -> list[CertFinding]:
    when = _aware(now)
    out: list[CertFinding] = []
    for i, cert in enumerate(chain):
        which = (
            f"the certificate in {path}"
            if i == 0
            else f"certificate {i + 1} in {path} ({_subject(cert)})"
        )
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if when < start:
            out.append(CertFinding("error", where, f"{which} is not valid before {_date(start)}"))
        elif when >= end:
            out.append(CertFinding("error", where, f"{which} expired on {_date(end)}"))
        elif end - when < EXPIRY_WARNING:
            days = (end - when).days
            left = "less than a day" if days == 0 else f"{days} day{'s' if days > 1 else ''}"
            out.append(CertFinding("warning", where, f"{which} expires in {left}, on {_date(end)}"))
    return out


def _stapling_findings(chain: list[x509.Certificate], path: str, where: str) -> list[CertFinding]:
    """Stapling that cannot work is reported, not fatal: the host still serves."""
    try:
        aia = chain[0].extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        responders = [
            d for d in aia.value if d.access_method == x509.AuthorityInformationAccessOID.OCSP
        ]
    except x509.ExtensionNotFound:
        responders = []
    if not responders:
        return [
            CertFinding(
                "warning",
                where,
                f"ocsp_stapling is on, but the certificate in {path} names no OCSP responder "
                "(Let's Encrypt stopped OCSP in 2025); nothing will be stapled",
            )
        ]
    if len(chain) < 2:
        return [
            CertFinding(
                "warning",
                where,
                f"ocsp_stapling needs the issuer's certificate after the leaf in {path}; "
                "nothing will be stapled",
            )
        ]
    return []


def _subject(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        return f"CN={cns[0].value!s}"
    return cert.subject.rfc4514_string() or "no subject"


def _date(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
