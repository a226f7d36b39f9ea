"""Balancing methods, backups, drained servers in hash upstreams, policy spec errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build
from nginxgen.spec import SpecError, parse_spec
from tests.helpers import require_nginx

SPEC = """\
registry: {kind: file, path: s.yaml}
nginx: {listen: 8080, output: %s/nginx.conf, endpoints: reload}  # the static upstream lines
services: {app: {balance: %s}}
routes: [{path: /, service: app}]
"""


def built(tmp: Path, balance: str, *instances: dict, nginx_test: bool = True):
    spec = parse_spec(SPEC % (tmp, balance), tmp / "nginxgen.yaml")
    b = CatalogBuilder("t")
    for fields in instances:
        b.add("app", **fields)
    binary = require_nginx().binary if nginx_test else None
    return build(spec, b.build(), binary=binary, cache=BuildCache())


A = {"id": "a", "address": "127.0.0.1:9001"}
B = {"id": "b", "address": "127.0.0.1:9002", "state": "draining"}
C = {"id": "c", "address": "127.0.0.1:9003", "state": "down"}
BACKUP = {"id": "k", "address": "127.0.0.1:9004", "tags": ["backup"]}


@pytest.mark.parametrize(
    ("balance", "directive"),
    [
        ("round_robin", None),
        ("least_conn", "least_conn;"),
        ("random", "random;"),
        ("ip_hash", "ip_hash;"),
        ('"hash $request_uri"', "hash $request_uri;"),
        ('"hash $http_x_user$cookie_sid consistent"', "hash $http_x_user$cookie_sid consistent;"),
    ],
)
def test_balance_renders_verifies_and_passes_nginx_t(tmp_path, balance, directive) -> None:
    result = built(tmp_path, balance, A, {"id": "a2", "address": "127.0.0.1:9005"})
    assert result.verdict.ok, result.verdict.findings
    lines = [line.strip() for line in result.text.splitlines()]
    if directive:
        assert directive in lines
        # nginx wants the method before keepalive
        assert lines.index(directive) < lines.index("keepalive 32;")
    else:
        assert not any(line.startswith(("least_conn", "hash ", "random")) for line in lines)


@pytest.mark.parametrize("balance", ["ip_hash", '"hash $request_uri consistent"'])
def test_hash_upstreams_keep_drained_and_down_instances_as_down_servers(tmp_path, balance) -> None:
    result = built(tmp_path, balance, A, B, C)
    assert result.verdict.ok, result.verdict.findings
    (up,) = result.plan.upstreams
    assert [(s.instance_id, s.down) for s in up.servers] == [
        ("a", False),
        ("b", True),
        ("c", True),
    ]
    assert "server 127.0.0.1:9002 weight=1 max_fails=3 fail_timeout=10s down;" in result.text


def test_round_robin_leaves_drained_instances_out(tmp_path) -> None:
    result = built(tmp_path, "least_conn", A, B, C)
    (up,) = result.plan.upstreams
    assert [s.instance_id for s in up.servers] == ["a"]


def test_backups_render_as_backup_with_round_robin(tmp_path) -> None:
    result = built(tmp_path, "round_robin", A, BACKUP, {**BACKUP, "id": "m", "tags": []})
    assert result.verdict.ok, result.verdict.findings
    assert "server 127.0.0.1:9004 weight=1 max_fails=3 fail_timeout=10s backup;" in result.text


@pytest.mark.parametrize("balance", ["ip_hash", "random", '"hash $remote_addr"'])
def test_backups_are_refused_by_methods_that_cannot_take_them(tmp_path, balance) -> None:
    meta_backup = {"id": "m", "address": "127.0.0.1:9006", "meta": {"backup": "true"}}
    result = built(tmp_path, balance, A, BACKUP, meta_backup)
    assert result.verdict.ok, result.verdict.findings  # nginx -t accepts what is left
    assert " backup;" not in result.text
    assert [s.instance_id for s in result.plan.upstreams[0].servers] == ["a"]
    refused = [d for d in result.plan.dropped if "backup instances cannot be used" in d]
    assert len(refused) == 2
    assert refused[0].startswith("service 'app' instance 'k'")


def test_verify_notices_a_tampered_balance_directive(tmp_path) -> None:
    from nginxgen.verify import verify

    result = built(tmp_path, '"hash $request_uri"', A, nginx_test=False)
    tampered = result.text.replace("hash $request_uri;", "hash $remote_addr;")
    assert not verify(tampered, result.plan).ok


BAD = [
    ("balance: fastest", "unknown balance"),
    ('balance: "hash"', "hash <key>"),
    ('balance: "hash $request_uri sticky"', "hash <key>"),
    ('balance: "hash $upstream_addr"', "hash key"),
    ('balance: "hash ${request_uri}"', "hash key"),
    ('balance: "hash $request_uri;evil"', "hash key"),
    ('balance: "least_conn x"', "takes no arguments"),
    ("warmup: {step_percent: 0}", "greater than"),
    ("warmup: {period: 0s}", "longer than 0s"),
    ("warmup: maybe", "must be a mapping (key: value)"),
    ("probe: {path: health}", "URL path"),
    ("probe: {expect_status: [200, 999]}", "expect_status"),
    ("probe: {fall: 0}", "greater than"),
    ("probe: {recovery: {after: 3}}", "exactly one of"),
    ("probe: {recovery: {url: 'ftp://x'}}", "http://"),
]


@pytest.mark.parametrize(("policy", "words"), BAD)
def test_bad_policy_names_the_service_key(tmp_path, policy, words) -> None:
    text = (
        "registry: {kind: file, path: s.yaml}\n"
        f"services:\n  app: {{{policy}}}\n"
        "routes: [{path: /, service: app}]\n"
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text, tmp_path / "nginxgen.yaml")
    assert "nginxgen.yaml:3: services.app." in str(info.value), info.value
    assert words in str(info.value), info.value
