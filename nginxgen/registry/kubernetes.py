"""The Kubernetes API as nginxgen uses it: list and watch the EndpointSlices of one
namespace (discovery.k8s.io/v1), through the shared registry HTTP layer.

Plain `requests` rather than the official client or lightkube: nginxgen needs exactly two
calls, and what matters is how they behave — bookmarks, 410 Gone, a rotating token — not
the breadth of a generated client; going through `Http` gives the same TLS, timeouts,
secret scrubbing and error wording as every other registry.

Settings default to the pod's own, as client-go's in-cluster config does: the API at
https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the service account's token,
CA and namespace under /var/run/secrets/kubernetes.io/serviceaccount.

The token is re-read whenever its file changes: projected service-account tokens expire
(an hour by default) and the kubelet rewrites the file before they do. A 401 re-reads it
once more before the call fails.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from .. import __version__
from ..spec import KubernetesRegistry, RegistryTLS
from .errors import HttpStatusError, RegistryConfigError, RegistryError, printable
from .http import Http, status_detail

SERVICEACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ENDPOINTSLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
# Everything nginxgen asks of the API server, as RBAC names it: (apiGroup, resource) →
# verbs. examples/kubernetes/rbac.yaml grants exactly this, and a test holds both to it.
PERMISSIONS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("discovery.k8s.io", "endpointslices"): ("list", "watch"),
}
PAGE = 500  # slices per list page (limit/continue)
# Watches are asked to end after watch_timeout × [1, 2): a fleet of sidecars started together
# does not re-open its watches in step (client-go spreads them the same way).
WATCH_SPREAD = 2.0
# A stream with no byte for this long is re-opened: the API server sends a bookmark about
# once a minute to a watch that allows them, so silence means a dead connection.
STREAM_IDLE = 75.0


class Expired(RegistryError):
    """410 Gone: the resourceVersion (or continue token) is older than the history the API
    server keeps. Not an outage: list again, then watch from the new list."""


@dataclass(frozen=True)
class Target:
    """Where and as whom to call, after the in-cluster defaults are applied."""

    api: str
    namespace: str
    token_file: str | None
    ca_file: str | None


def status_message(r: requests.Response) -> str:
    """The API server's own words from a Status answer, else the start of the body."""
    try:
        data = r.json()
    except ValueError:
        return status_detail(r)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return printable(data["message"])[:200]
    return status_detail(r)


def resolve(
    config: KubernetesRegistry, environ: Mapping[str, str], serviceaccount: str | None = None
) -> Target:
    """Apply the in-cluster defaults; a setting that cannot work is a RegistryConfigError."""
    serviceaccount = serviceaccount or SERVICEACCOUNT
    api = config.api
    if api is None:
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise RegistryConfigError(
                "kubernetes: registry.api is not set and KUBERNETES_SERVICE_HOST/_PORT are "
                "not either (outside a pod, set registry.api)"
            )
        api = f"https://{f'[{host}]' if ':' in host else host}:{port}"
    where = f"kubernetes {api}"
    namespace = config.namespace
    if namespace is None:
        path = os.path.join(serviceaccount, "namespace")
        try:
            with open(path, encoding="utf-8") as f:
                namespace = f.read().strip()
        except OSError:
            raise RegistryConfigError(
                f"{where}: registry.namespace is not set and {path} cannot be read "
                "(outside a pod, set registry.namespace)"
            ) from None
    token_file = _file(
        config.token_file, "token_file", os.path.join(serviceaccount, "token"), where
    )
    ca_file = _file(config.ca_file, "ca_file", os.path.join(serviceaccount, "ca.crt"), where)
    return Target(api, namespace, token_file, ca_file if api.startswith("https:") else None)


def _file(path: str | None, key: str, default: str, where: str) -> str | None:
    """A file the spec names must be readable; the service account's may be absent
    (`kubectl proxy`, or automountServiceAccountToken: false)."""
    if path is None:
        return default if os.path.exists(default) else None
    if not os.access(path, os.R_OK):
        what = "no such file" if not os.path.exists(path) else "not readable"
        raise RegistryConfigError(f"{where}: registry.{key} {path}: {what}")
    return path


class TokenFile:
    """A bearer token read from a file, and read again whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.value = ""
        self._stamp: tuple[int, int, int] | None = None

    def current(self) -> str:
        try:
            st = os.stat(self.path)  # follows the kubelet's ..data symlink swap
        except OSError as exc:
            raise RegistryError(f"kubernetes: token_file {self.path}: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._read(stamp)
        return self.value

    def reread(self) -> bool:
        """Read the file again whatever its stamp says; True when the token changed."""
        before = self.value
        self._stamp = None
        return self.current() != before

    def _read(self, stamp: tuple[int, int, int]) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                self.value = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise RegistryError(f"kubernetes: token_file {self.path}: {why}") from None
        self._stamp = stamp


class KubernetesClient:
    def __init__(
        self,
        config: KubernetesRegistry,
        environ: Mapping[str, str] | None = None,
        serviceaccount: str | None = None,  # default SERVICEACCOUNT
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.target = resolve(config, os.environ if environ is None else environ, serviceaccount)
        self.url = self.target.api + ENDPOINTSLICES.format(namespace=self.target.namespace)
        self.http = Http(
            "kubernetes",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            tls=RegistryTLS(ca=self.target.ca_file),
            # The API server's audit log and its priority-and-fairness rules see who calls.
            headers={"Accept": "application/json", "User-Agent": f"nginxgen/{__version__}"},
            detail=status_message,
        )
        self.token = TokenFile(self.target.token_file) if self.target.token_file else None
        self._rng = rng or random.Random()

    def fail(self, what: str) -> RegistryError:
        return self.http.fail(self.url, what)

    def _bearer(self) -> dict[str, str]:
        if self.token is None:
            return {}
        token = self.token.current()
        if token and token not in self.http.secrets:
            self.http.secrets[:] = [token]  # a rotated token replaces the old one
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(
        self, params: dict[str, str], *, stream: bool = False, read_timeout: float | None = None
    ) -> requests.Response:
        """GET the slice collection; a 401 re-reads the token once, a 410 is Expired."""
        for attempt in range(2):
            r = self.http.request(
                "GET",
                self.url,
                params=params,
                headers=self._bearer(),
                stream=stream,
                read_timeout=read_timeout,
                ok=range(200, 600),  # a refused watch is a short Status: quoted below
            )
            if r.status_code == 200:
                return r
            if r.status_code != 401:
                detail = self.http.scrub(status_message(r))
                r.close()
                what = str(self.fail(f"HTTP {r.status_code}: {detail}"))
                if r.status_code == 410:
                    raise Expired(what)
                raise HttpStatusError(what, r.status_code, detail)
            r.close()
            if attempt or self.token is None or not self.token.reread():
                break
        if self.token is None:
            hint = "no token: no registry.token_file and no service account token mounted"
        else:
            hint = f"the API server refuses the token in {self.token.path}"
        raise HttpStatusError(str(self.fail(f"HTTP 401 Unauthorized ({hint})")), 401)

    def list(self, selector: str) -> tuple[list[Any], str]:
        """Every slice the selector matches, page by page: (items, the list's
        resourceVersion). A continue token that expired mid-way starts the list over once."""
        items: list[Any] = []
        token = ""
        restarted = False
        while True:
            params = {"labelSelector": selector, "limit": str(PAGE)}
            if token:
                params["continue"] = token
            try:
                data = self.http.json(self.get(params), self.url)
            except Expired:
                if not token or restarted:
                    raise
                items, token, restarted = [], "", True
                continue
            meta = data.get("metadata") if isinstance(data, dict) else None
            page = data.get("items") if isinstance(data, dict) else None
            if not isinstance(meta, dict):
                meta = {}
            version = meta.get("resourceVersion")
            if not isinstance(version, str) or not version or not isinstance(page, list):
                raise self.fail("expected an EndpointSliceList with metadata.resourceVersion")
            items.extend(page)
            token = meta.get("continue") or ""
            if not isinstance(token, str):
                raise self.fail("metadata.continue is not a string")
            if not token:
                return items, version

    def watch(self, selector: str, resource_version: str) -> tuple[requests.Response, float]:
        """Open a watch from resource_version: (the streamed answer, the idle limit after
        which a silent stream should be re-opened)."""
        seconds = int(self.config.watch_timeout * (1 + (WATCH_SPREAD - 1) * self._rng.random()))
        idle = min(STREAM_IDLE, seconds + self.config.read_timeout)
        params = {
            "labelSelector": selector,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(seconds),
        }
        return self.get(params, stream=True, read_timeout=idle), idle

    def events(self, r: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) for each watch event. An ERROR event raises: Expired for 410,
        RegistryError for anything else."""
        for line in r.iter_lines():
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                raise self.fail("watch sent a line that is not JSON") from None
            kind = event.get("type") if isinstance(event, dict) else None
            obj = event.get("object") if isinstance(event, dict) else None
            if not isinstance(kind, str) or not isinstance(obj, dict):
                raise self.fail("watch sent an event without type and object")
            if kind == "ERROR":
                raise watch_error(obj, self.fail)
            yield kind, obj

    def close(self) -> None:
        self.http.close()


def watch_error(status: dict[str, Any], fail: Any) -> RegistryError:
    """The Status object of an ERROR event as an exception."""
    code, reason = status.get("code"), status.get("reason")
    message = printable(str(status.get("message") or "no message"))[:200]
    if code == 410:
        return Expired(str(fail(f"watch expired (410 {reason or 'Gone'}): {message}")))
    return fail(f"watch error {code} {reason}: {message}")
