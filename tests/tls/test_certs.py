"""nginxgen/tls/certs.py: a host's certificate is checked against its key, its names and
the clock before it is served, and each finding names the spec line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from nginxgen.spec import load_spec
from nginxgen.tls.certs import (
    CertFinding,
    certificate_files,
    check_ca_bundle,
    check_certificates,
    check_client_pair,
    check_server_pair,
    name_covered,
)
from tests.helpers.certs import NOW, Issued, make_ca, make_cert, new_key, write_pair

WHERE = "spec.yaml:9: hosts[0].tls.cert"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


@pytest.fixture(scope="module")
def intermediate(ca: Issued) -> Issued:
    return make_ca("nginxgen test intermediate", issuer=ca)


def check(
    tmp_path: Path, chain: list[Issued], names: list[str], key: Issued | None = None, **kw
) -> list[CertFinding]:
    cert, key_path = write_pair(tmp_path, "host", chain, key)
    return check_server_pair(str(cert), str(key_path), names, kw.pop("now", NOW), where=WHERE, **kw)


def messages(findings: list[CertFinding], level: str = "error") -> list[str]:
    return [f.message for f in findings if f.level == level]


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_a_good_chain_of_each_key_type_has_no_findings(tmp_path, intermediate, kind):
    leaf = make_cert(["a.test"], issuer=intermediate, key=new_key(kind))
    assert check(tmp_path, [leaf, intermediate], ["a.test"]) == []


def test_a_key_of_another_certificate_is_refused_naming_the_key(tmp_path, intermediate):
    leaf = make_cert(["a.test"], issuer=intermediate)
    stranger = make_cert(["a.test"], issuer=intermediate)
    cert, key = write_pair(tmp_path, "host", [leaf, intermediate], stranger)
    findings = check_server_pair(
        str(cert),
        str(key),
        ["a.test"],
        NOW,
        where=WHERE,
        key_where="spec.yaml:10: hosts[0].tls.key",
    )
    assert [str(f) for f in findings] == [
        f"spec.yaml:10: hosts[0].tls.key: the key in {key} does not belong to the certificate "
        f"in {cert} (CN=a.test)"
    ]


def test_a_chain_with_the_leaf_last_is_refused(tmp_path, intermediate):
    leaf = make_cert(["a.test"], issuer=intermediate)
    findings = check(tmp_path, [intermediate, leaf], ["a.test"], key=leaf)
    assert len(findings) == 1 and findings[0].level == "error"
    assert "the key belongs to certificate 2" in findings[0].message
    assert "put the leaf first" in findings[0].message


def test_a_chain_whose_second_certificate_did_not_issue_the_first_is_refused(
    tmp_path, ca, intermediate
):
    other = make_ca("another intermediate", issuer=ca)
    leaf = make_cert(["a.test"], issuer=intermediate)
    [message] = messages(check(tmp_path, [leaf, other], ["a.test"]))
    assert "certificate 2" in message and "(CN=another intermediate) did not issue" in message
    # leaf, intermediate, root is a complete chain in order
    assert check(tmp_path, [leaf, intermediate, ca], ["a.test"]) == []


def test_an_expired_certificate_fails_and_says_when(tmp_path, intermediate):
    leaf = make_cert(
        ["a.test"],
        issuer=intermediate,
        not_before=timedelta(days=-90),
        not_after=timedelta(days=-2),
    )
    [finding] = check(tmp_path, [leaf, intermediate], ["a.test"])
    assert finding.level == "error"
    assert finding.message.endswith(f"expired on {(NOW - timedelta(days=2)):%Y-%m-%d %H:%M} UTC")
    assert str(finding).startswith(WHERE + ": the certificate in ")


def test_a_certificate_not_valid_yet_fails(tmp_path, intermediate):
    leaf = make_cert(["a.test"], issuer=intermediate, not_before=timedelta(hours=3))
    [message] = messages(check(tmp_path, [leaf, intermediate], ["a.test"]))
    assert "is not valid before" in message


def test_expiry_warns_under_fourteen_days_only(tmp_path, intermediate):
    soon = make_cert(["a.test"], issuer=intermediate, not_after=timedelta(days=13, hours=1))
    [finding] = check(tmp_path, [soon, intermediate], ["a.test"])
    assert finding.level == "warning" and "expires in 13 days" in finding.message
    later = make_cert(["a.test"], issuer=intermediate, not_after=timedelta(days=14, hours=1))
    assert check(tmp_path, [later, intermediate], ["a.test"]) == []
    # the same certificate, read on another day: the clock is an argument
    findings = check(tmp_path, [later, intermediate], ["a.test"], now=NOW + timedelta(days=15))
    assert messages(findings) and "expired on" in messages(findings)[0]


def test_an_expired_intermediate_is_named(tmp_path, ca):
    old = make_ca(
        "old intermediate", issuer=ca, not_before=timedelta(days=-400), not_after=timedelta(days=-1)
    )
    leaf = make_cert(["a.test"], issuer=old)
    [message] = messages(check(tmp_path, [leaf, old], ["a.test"]))
    assert "certificate 2" in message and "(CN=old intermediate) expired on" in message


def test_names_the_certificate_does_not_cover_are_listed(tmp_path, intermediate):
    leaf = make_cert(["a.test", "www.a.test"], issuer=intermediate)
    [message] = messages(check(tmp_path, [leaf, intermediate], ["a.test", "api.a.test", "b.test"]))
    assert "does not cover api.a.test, b.test (it names a.test, www.a.test)" in message


def test_a_wildcard_certificate_covers_one_label_only(tmp_path, intermediate):
    leaf = make_cert(["*.b.test"], issuer=intermediate)
    assert check(tmp_path, [leaf, intermediate], ["x.b.test", "*.b.test"]) == []
    [message] = messages(check(tmp_path, [leaf, intermediate], ["b.test", "y.x.b.test"]))
    assert "does not cover b.test, y.x.b.test" in message


def test_a_wildcard_host_needs_the_wildcard_itself(tmp_path, intermediate):
    leaf = make_cert(["x.b.test"], issuer=intermediate)
    [message] = messages(check(tmp_path, [leaf, intermediate], ["*.b.test"]))
    assert "does not cover *.b.test" in message


@pytest.mark.parametrize(
    ("patterns", "name", "covered"),
    [
        (["*.b.test"], "x.b.test", True),
        (["*.b.test"], "X.B.Test", True),
        (["*.b.test"], "b.test", False),
        (["*.b.test"], "y.x.b.test", False),
        (["*.b.test"], "*.b.test", True),
        (["x.b.test"], "*.b.test", False),
        (["f*.b.test"], "foo.b.test", False),  # partial wildcards: not honoured
        (["a.test"], "a.test.", True),
        (["127.0.0.1"], "127.0.0.1", True),
        (["*.0.0.1"], "127.0.0.1", False),
    ],
)
def test_name_covered_follows_rfc_6125(patterns, name, covered):
    assert name_covered(patterns, name) is covered


def test_a_certificate_without_subject_alt_name_is_refused(tmp_path, intermediate):
    leaf = make_cert(["a.test"], issuer=intermediate, san=False)
    [message] = messages(check(tmp_path, [leaf, intermediate], ["a.test"]))
    assert "has no subjectAltName" in message


def test_unusable_files_are_one_sentence_each(tmp_path, intermediate):
    leaf = make_cert(["a.test"], issuer=intermediate)
    cert, key = write_pair(tmp_path, "host", [leaf, intermediate])

    def only(cert_path: Path, key_path: Path) -> str:
        [finding] = check_server_pair(str(cert_path), str(key_path), ["a.test"], NOW, where=WHERE)
        assert finding.level == "error"
        return finding.message

    assert (
        only(tmp_path / "nope.pem", key)
        == f"cannot read {tmp_path / 'nope.pem'}: No such file or directory"
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert "holds no PEM certificate" in only(junk, key)
    assert "holds no PEM private key" in only(cert, junk)
    locked = tmp_path / "locked.key"
    locked.write_bytes(leaf.key_pem(password=b"secret"))
    assert "is encrypted" in only(cert, locked)
    weak = make_cert(["a.test"], issuer=intermediate, key=new_key("rsa", 1024))
    cert_weak, key_weak = write_pair(tmp_path, "weak", [weak, intermediate])
    assert "has 1024 bits" in only(cert_weak, key_weak)


def test_ocsp_stapling_that_cannot_work_is_a_warning(tmp_path, intermediate):
    plain = make_cert(["a.test"], issuer=intermediate)
    [finding] = check(tmp_path, [plain, intermediate], ["a.test"], ocsp_stapling=True)
    assert finding.level == "warning" and "names no OCSP responder" in finding.message
    with_url = make_cert(["a.test"], issuer=intermediate, ocsp_url="http://ocsp.test/")
    [finding] = check(tmp_path, [with_url], ["a.test"], ocsp_stapling=True)
    assert finding.level == "warning" and "issuer's certificate" in finding.message
    assert check(tmp_path, [with_url, intermediate], ["a.test"], ocsp_stapling=True) == []


def test_client_certificates_and_ca_bundles(tmp_path, ca, intermediate):
    client = make_cert(["gateway"], issuer=intermediate, client=True)
    cert, key = write_pair(tmp_path, "client", [client, intermediate])
    assert check_client_pair(str(cert), str(key), NOW, where=WHERE) == []
    old = make_cert(["gateway"], issuer=intermediate, client=True, not_after=timedelta(days=-1))
    cert, key = write_pair(tmp_path, "old", [old, intermediate])
    assert "expired on" in check_client_pair(str(cert), str(key), NOW, where=WHERE)[0].message
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.pem())
    assert check_ca_bundle(str(bundle), NOW, where=WHERE) == []
    [finding] = check_ca_bundle(str(bundle), NOW + timedelta(days=4000), where=WHERE)
    assert "every CA certificate" in finding.message


SPEC = """\
registry: {kind: file, path: services.yaml}
nginx:
  listen: [8080, {port: 8443, tls: true}]
hosts:
  - server_names: [a.test]
    routes: [{path: /, service: users}]
  - server_names: [b.test, "*.b.test"]
    tls:
      cert: b.pem
      key: b.key
    routes:
      - path: /
        service: orders
        upstream_tls: {ca: ca.pem, sni: orders.internal, client_cert: c.pem, client_key: c.key}
"""


def test_check_certificates_names_the_spec_line_of_each_file(tmp_path, ca, intermediate):
    leaf = make_cert(["b.test"], issuer=intermediate)  # no *.b.test
    write_pair(tmp_path, "b", [leaf, intermediate])
    client = make_cert(["gateway"], issuer=intermediate, client=True)
    other = make_cert(["gateway"], issuer=intermediate, client=True)
    write_pair(tmp_path, "c", [client, intermediate], key=other)
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    spec = load_spec(path, accept_unrendered=True)
    found = [str(f) for f in check_certificates(spec, NOW)]
    assert found == [
        f"{path}:9: hosts[1].tls.cert: the certificate in {tmp_path / 'b.pem'} does not cover "
        "*.b.test (it names b.test)",
        f"{path}:14: hosts[1].routes[0].upstream_tls.client_key: the key in {tmp_path / 'c.key'} "
        f"does not belong to the certificate in {tmp_path / 'c.pem'} (CN=gateway)",
    ]
    assert certificate_files(spec) == tuple(
        str(tmp_path / n) for n in ("b.pem", "b.key", "ca.pem", "c.pem", "c.key")
    )
