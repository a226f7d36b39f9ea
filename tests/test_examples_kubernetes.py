"""examples/kubernetes/ hangs together: the Role grants exactly what the source calls, the
names the objects refer to each other by match, and the spec the ConfigMap is made from
loads with nginxgen's own loader and opens in a pod."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from nginxgen.registry import kubernetes as kube_client
from nginxgen.sources import open_source
from nginxgen.sources.kubernetes import KubernetesSource
from nginxgen.spec import load_spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """kind → the one object of that kind the kustomization's resources hold."""
    kustomization = documents("kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in documents(resource):
            key = doc["kind"] if doc["kind"] not in found else f"{doc['kind']}#2"
            found[key] = doc
    found["Kustomization"] = kustomization
    return found


def pod_spec(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment"]["spec"]["template"]["spec"]


def test_the_role_grants_exactly_what_the_source_calls(objects):
    assert "ClusterRole" not in objects and "ClusterRoleBinding" not in objects
    granted = {
        (group, resource): tuple(sorted(rule["verbs"]))
        for rule in objects["Role"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    needed = {k: tuple(sorted(v)) for k, v in kube_client.PERMISSIONS.items()}
    assert granted == needed


def test_the_names_match(objects):
    namespace = objects["Kustomization"]["namespace"]
    for kind, obj in objects.items():
        if kind != "Kustomization":
            assert obj["metadata"]["namespace"] == namespace, kind
    account, role, binding = objects["ServiceAccount"], objects["Role"], objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace}
    ]
    pod = pod_spec(objects)
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True) is True
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()


def test_the_containers_read_the_spec_the_configmap_is_made_from(objects):
    [generator] = objects["Kustomization"]["configMapGenerator"]
    assert generator["files"] == ["nginxgen.yaml"]
    pod = pod_spec(objects)
    [volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == generator["name"]
    spec = load_spec(EXAMPLE / "nginxgen.yaml")
    conf_dir = str(Path(spec.nginx.output).parent)
    runs_nginxgen = [
        c for c in pod["initContainers"] + pod["containers"] if "watch" in c.get("args", ())
    ]
    assert [c["name"] for c in runs_nginxgen] == ["first-render", "nginxgen"]
    for container in runs_nginxgen:
        args = container["args"]
        config = Path(args[args.index("-c") + 1])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[str(config.parent)] == volume["name"], shlex.join(args)
        assert mounts[conf_dir] == "conf"  # nginx.conf and nginx.pid on the shared emptyDir
    [openresty] = [c for c in pod["containers"] if c["name"] == "openresty"]
    assert str(Path(spec.nginx.output)) in openresty["command"]
    assert {m["mountPath"] for m in openresty["volumeMounts"]} == {conf_dir}
    assert pod["shareProcessNamespace"] is True  # the sidecar signals the master


def test_the_spec_reads_the_cluster_in_a_pod(tmp_path, monkeypatch):
    spec = load_spec(EXAMPLE / "nginxgen.yaml")
    assert spec.registry.kind == "kubernetes"
    assert spec.registry.api is None and spec.registry.namespace is None  # the pod's own
    kustomization = documents("kustomization.yaml")[0]
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "namespace").write_text(kustomization["namespace"])
    (account / "token").write_text("token")
    monkeypatch.setattr(kube_client, "SERVICEACCOUNT", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    source = open_source(spec.registry, spec.service_names)
    try:
        assert isinstance(source, KubernetesSource)
        assert source.client.url == (
            "https://10.96.0.1:443/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        )
        assert source.selector == "kubernetes.io/service-name in (orders,users)"
    finally:
        source.close()
