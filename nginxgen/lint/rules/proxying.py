"""Proxying: where proxy_pass goes, how it retries, how long it waits, what it forwards."""

from __future__ import annotations

import ipaddress

from ...model.names import AUTH_PREFIX
from ..findings import rule
from ..tree import TIMEOUTS, Checks, Node, ProxyPassFact, Walk

NEXT_UPSTREAM_VALUES = {
    "error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
    "http_403", "http_404", "http_429", "non_idempotent", "off",
}  # fmt: skip
INTERNAL = "nginxgen-internal"  # the mark of nginxgen's own subrequest locations


def internal_location(node: Node) -> str | None:
    """nginxgen's auth_request locations proxy to a URL on purpose (its aggregate parts
    and image_fit's originals, also under /_nginxgen/, proxy to upstreams like routes)."""
    args = node["args"]
    if node["directive"] == "location" and args[-1:] and args[-1].startswith(AUTH_PREFIX):
        return INTERNAL
    return None


def check_proxy_pass(node: Node, w: Walk) -> None:
    if not node["args"]:
        return
    if w.facts.generated is not None and w.marked(INTERNAL):
        return  # nginxgen's own subrequest locations (auth_request) proxy to a URL
    w.facts.proxy_passes.append(
        ProxyPassFact(node["args"][0], w.file, node["line"], w.scope, w.suppressed)
    )
    if w.scope.in_http:
        proxy_timeouts_missing(node, w)


PROXY_TIMEOUTS_MISSING = rule(
    "NGX010",
    "proxy-timeouts-missing",
    "warning",
    "proxying location without explicit proxy timeouts",
    """`proxy_connect_timeout`, `proxy_read_timeout` and `proxy_send_timeout` default
    to 60s each. A hung backend then holds a client and a worker connection for a
    minute before failover starts. Set them (here or at server/http level) to what
    the service needs.""",
)


def proxy_timeouts_missing(node: Node, w: Walk) -> None:
    missing = [t for t in TIMEOUTS if t not in w.scope.timeouts]
    if missing:
        w.hit(
            PROXY_TIMEOUTS_MISSING.id,
            node["line"],
            f"proxy_pass without {', '.join(missing)} (default 60s)",
        )


def proxy_host(target: str) -> str | None:
    """The host part of an http(s):// proxy_pass target; None for variables and sockets.
    A variable right after a literal host is the URI (nginxgen's aggregate parts and
    image_fit: `http://users$nginxgen_part_uri`, set by Lua to a path)."""
    if "$" in target:
        head = target.split("$", 1)[0]
        if head.endswith("://") or "/" in head.partition("://")[2] or "://" not in head:
            return None
        target = head
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    host = rest.split("/", 1)[0]
    if host.startswith("unix:"):
        return None
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_literal_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_proxy_targets(w: Walk) -> None:
    upstreams = w.facts.upstreams
    for p in w.facts.proxy_passes:
        host = proxy_host(p.target)
        if host is None:
            continue
        upstream = upstreams.get(host)
        if upstream is None:
            if not is_literal_address(host):
                proxy_pass_unresolved_name(p, host, w)
        elif upstream.keepalive:
            keepalive_without_http11(p, w)


PROXY_PASS_UNRESOLVED_NAME = rule(
    "NGX003",
    "proxy-pass-unresolved-name",
    "warning",
    "proxy_pass to a host name that is no upstream: resolved once, at start",
    """`proxy_pass http://name` where `name` is neither an `upstream` in this config
    nor an IP address makes nginx resolve the name once, when it loads the config,
    and use those addresses until the next reload: a service that moves keeps
    getting traffic at its old address, and a name that does not resolve at reload
    time makes the reload fail. Define an upstream, use an address, or use a
    variable with a `resolver` if runtime resolution is wanted.""",
)


def proxy_pass_unresolved_name(p: ProxyPassFact, host: str, w: Walk) -> None:
    w.hit(
        "NGX003",
        p.line,
        f"proxy_pass {p.target}: {host!r} is no upstream here; nginx resolves it once, at start",
        file=p.file,
        suppressed=p.suppressed,
    )


KEEPALIVE_WITHOUT_HTTP11 = rule(
    "NGX009",
    "keepalive-without-http11",
    "warning",
    "keepalive upstream proxied without HTTP/1.1 and an empty Connection header",
    """Connections to an upstream with `keepalive` are only reused when the location
    sends `proxy_http_version 1.1;` and `proxy_set_header Connection "";`.
    Without them every request opens a new connection: the keepalive pool is
    dead weight and backends see connection churn under load.""",
)


def keepalive_without_http11(p: ProxyPassFact, w: Walk) -> None:
    missing = []
    if p.scope.http_version != "1.1":
        missing.append("proxy_http_version 1.1")
    if p.scope.header("connection") != "":
        missing.append('proxy_set_header Connection ""')
    if missing:
        w.hit(
            "NGX009",
            p.line,
            f"proxy_pass {p.target} uses a keepalive upstream without {' and '.join(missing)}",
            file=p.file,
            suppressed=p.suppressed,
        )


NEXT_UPSTREAM_NON_IDEMPOTENT = rule(
    "NGX006",
    "next-upstream-non-idempotent",
    "warning",
    "proxy_next_upstream non_idempotent retries POST/PATCH/LOCK",
    """`non_idempotent` lets nginx resend POST, LOCK and PATCH requests to another
    server after an error. If the first server had already acted on the request,
    it now happens twice (two orders, two payments). Leave it out unless every
    backend behind this location is idempotent by design.""",
)


def check_next_upstream(node: Node, w: Walk) -> None:
    args = node["args"]
    next_upstream_invalid(args, node, w)
    if "non_idempotent" in args:
        w.hit(NEXT_UPSTREAM_NON_IDEMPOTENT.id, node["line"])


NEXT_UPSTREAM_INVALID = rule(
    "NGX004",
    "next-upstream-invalid",
    "error",
    "invalid proxy_next_upstream value",
    """`proxy_next_upstream` accepts error, timeout, invalid_header, http_500,
    http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent and
    off. `off` disables retries and makes any other value meaningless; nginx
    silently accepts the combination, so the retries you meant to configure never
    happen.""",
)


def next_upstream_invalid(args: list[str], node: Node, w: Walk) -> None:
    bad = [a for a in args if a not in NEXT_UPSTREAM_VALUES]
    if bad:
        w.hit(
            NEXT_UPSTREAM_INVALID.id,
            node["line"],
            f"proxy_next_upstream: invalid value(s) {', '.join(bad)}",
        )
    if "off" in args and len(args) > 1:
        w.hit(
            NEXT_UPSTREAM_INVALID.id,
            node["line"],
            "proxy_next_upstream: 'off' combined with other values",
        )


NEXT_UPSTREAM_UNLIMITED_TRIES = rule(
    "NGX005",
    "next-upstream-unlimited-tries",
    "warning",
    "proxy_next_upstream_tries 0 means unlimited retries",
    """With 0, a failing request is passed to every server of the upstream in turn:
    one slow or broken request can hit the whole fleet and multiply load during an
    incident. Set a small number (2-3) and a `proxy_next_upstream_timeout`.""",
)


def next_upstream_unlimited_tries(node: Node, w: Walk) -> None:
    if node["args"] == ["0"]:
        w.hit(NEXT_UPSTREAM_UNLIMITED_TRIES.id, node["line"])


XFF_FROM_CLIENT = rule(
    "NGX011",
    "xff-from-client",
    "warning",
    "X-Forwarded-For passed through from the client",
    """`$proxy_add_x_forwarded_for` and `$http_x_forwarded_for` keep whatever the
    client sent in X-Forwarded-For, so any client can claim any address to a backend
    that trusts the header (rate limits, allow-lists, audit logs). At the edge, set
    it from `$remote_addr`; behind a trusted proxy, use the realip module first.""",
)


def xff_from_client(node: Node, w: Walk) -> None:
    args = node["args"]
    if len(args) >= 2 and args[0].lower() == "x-forwarded-for":
        for var in ("$proxy_add_x_forwarded_for", "$http_x_forwarded_for"):
            if var in args[1]:
                w.hit(XFF_FROM_CLIENT.id, node["line"], f"X-Forwarded-For set from {var}")
                return


RULES = (
    PROXY_PASS_UNRESOLVED_NAME,
    NEXT_UPSTREAM_INVALID,
    NEXT_UPSTREAM_UNLIMITED_TRIES,
    NEXT_UPSTREAM_NON_IDEMPOTENT,
    KEEPALIVE_WITHOUT_HTTP11,
    PROXY_TIMEOUTS_MISSING,
    XFF_FROM_CLIENT,
)
CHECKS = Checks(
    on={
        "proxy_pass": (check_proxy_pass,),
        "proxy_next_upstream": (check_next_upstream,),
        "proxy_next_upstream_tries": (next_upstream_unlimited_tries,),
        "proxy_set_header": (xff_from_client,),
    },
    at_end=(check_proxy_targets,),
    markers=(internal_location,),
)
