"""Every example spec loads, and names the registry kind its directory promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.sources import open_source
from nginxgen.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("kind", ["etcd", "consul", "nacos", "eureka"])
def test_example_spec_loads(kind):
    spec = load_spec(EXAMPLES / kind / "nginxgen.yaml")
    assert spec.registry.kind == kind
    source = open_source(spec.registry, spec.service_names)
    source.close()


def test_secrets_in_the_spec_are_not_printed():
    from nginxgen.spec import ConsulRegistry

    config = ConsulRegistry(kind="consul", token="abc-secret")
    assert "abc-secret" not in repr(config) and "abc-secret" not in str(config)
