from __future__ import annotations

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.plan import make_plan
from nginxgen.render import config_generation, render
from nginxgen.spec import NginxSpec, Spec
from nginxgen.verify import verify
from nginxgen.verify.parse import parse_text
from nginxgen.verify.round_trip import round_trip


def spec(**nginx: object) -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": nginx,
            "routes": [{"path": "/", "service": "app"}],
        }
    )


def plan_for(port: int, **nginx: object):
    s = spec(**nginx)
    return make_plan(s, Catalog({"app": (Instance("a", "app", "127.0.0.1", port),)}))


def test_generation_is_a_stable_hash_that_follows_the_content():
    nginx = NginxSpec(status_listen="127.0.0.1:9181")
    one, again, other = (render(plan_for(p), nginx) for p in (9001, 9001, 9002))
    assert config_generation(one) == config_generation(again)
    assert config_generation(one) != config_generation(other)
    assert "listen 127.0.0.1:9181;" in one
    assert verify(one, plan_for(9001)).ok


def test_status_listener_can_be_turned_off():
    text = render(plan_for(9001, status_listen="off"), NginxSpec(status_listen="off"))
    assert config_generation(text) is None and "nginxgen/generation" not in text


def test_a_status_server_that_proxies_is_not_mistaken_for_the_status_listener():
    text = render(plan_for(9001), NginxSpec())
    status_catch_all = (
        "location / {\n            default_type application/json;\n"
        '            return 404 \'{"error":"not found"}\';'
    )
    assert text.count(status_catch_all) == 1
    bad = text.replace(status_catch_all, "location / {\n            proxy_pass http://x;")
    findings = round_trip(parse_text(bad)["config"][0]["parsed"], plan_for(9001))
    assert any("status server has unplanned location" in f.message for f in findings), findings


def test_status_listen_must_be_loopback():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="loopback"):
        NginxSpec(status_listen="0.0.0.0:9181")
