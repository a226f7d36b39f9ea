"""The rules: a registry of stable ids, and one small check per rule.

Ids never change meaning and are never reused; a retired rule keeps its number.
Checks are registered on the directive they look at (see tree.py), so the whole rule set
costs one pass over the parsed config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

# What nginxgen writes inside an upstream: verify.py's list, so the two never drift apart.
from ..model.names import STATUS_SERVER_NAME
from ..verify import UPSTREAM_DIRECTIVES as GENERATED_UPSTREAM_DIRECTIVES
from .findings import Rule, Severity
from .tree import (
    TIMEOUTS,
    LocationFact,
    Node,
    ProxyPassFact,
    UpstreamFact,
    Walk,
    at_end,
    marker,
    on,
)


def _rule(id: str, name: str, severity: Severity, message: str, explanation: str) -> Rule:
    return Rule(id, name, severity, message, " ".join(explanation.split()))


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        _rule(
            "NGX000",
            "syntax",
            "error",
            "nginx cannot parse this",
            """A syntax error, a directive in a context where nginx does not allow it, a wrong
            number of arguments, or an include that matches no readable file. nginx refuses
            to start or reload on any of these. Syntax errors cannot be suppressed inline.""",
        ),
        _rule(
            "NGX001",
            "upstream-empty",
            "error",
            "upstream has no servers",
            """nginx refuses a config with an upstream block that holds no `server`
            ("no servers are inside upstream"), so one service with nobody alive would take
            the whole gateway down at the next reload. Route such a service to a deliberate
            `return 503` instead (nginxgen does this), or remove the upstream.""",
        ),
        _rule(
            "NGX002",
            "upstream-only-backup",
            "error",
            "upstream has only backup servers",
            """Backup servers are used only while every primary server is down; with no
            primary at all, nginx refuses the config ("no servers in upstream"). Make at
            least one server a primary.""",
        ),
        _rule(
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
        ),
        _rule(
            "NGX004",
            "next-upstream-invalid",
            "error",
            "invalid proxy_next_upstream value",
            """`proxy_next_upstream` accepts error, timeout, invalid_header, http_500,
            http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent and
            off. `off` disables retries and makes any other value meaningless; nginx
            silently accepts the combination, so the retries you meant to configure never
            happen.""",
        ),
        _rule(
            "NGX005",
            "next-upstream-unlimited-tries",
            "warning",
            "proxy_next_upstream_tries 0 means unlimited retries",
            """With 0, a failing request is passed to every server of the upstream in turn:
            one slow or broken request can hit the whole fleet and multiply load during an
            incident. Set a small number (2-3) and a `proxy_next_upstream_timeout`.""",
        ),
        _rule(
            "NGX006",
            "next-upstream-non-idempotent",
            "warning",
            "proxy_next_upstream non_idempotent retries POST/PATCH/LOCK",
            """`non_idempotent` lets nginx resend POST, LOCK and PATCH requests to another
            server after an error. If the first server had already acted on the request,
            it now happens twice (two orders, two payments). Leave it out unless every
            backend behind this location is idempotent by design.""",
        ),
        _rule(
            "NGX007",
            "upstream-duplicate-server",
            "error",
            "the same server appears twice in one upstream",
            """nginx accepts it and silently doubles that server's share of traffic (and of
            retries). It usually means two registry entries for one address, or a
            copy-paste mistake. List each address once and use `weight=`.""",
        ),
        _rule(
            "NGX008",
            "backup-with-hash-balancer",
            "error",
            "backup server in an upstream balanced by hash, ip_hash or random",
            """These balancing methods do not support `backup`. When the method comes first,
            nginx refuses the config; when it comes after the servers, nginx accepts it and
            the backup server is never used as one. Use round-robin or least_conn with
            backups, or drop `backup`.""",
        ),
        _rule(
            "NGX009",
            "keepalive-without-http11",
            "warning",
            "keepalive upstream proxied without HTTP/1.1 and an empty Connection header",
            """Connections to an upstream with `keepalive` are only reused when the location
            sends `proxy_http_version 1.1;` and `proxy_set_header Connection "";`.
            Without them every request opens a new connection: the keepalive pool is
            dead weight and backends see connection churn under load.""",
        ),
        _rule(
            "NGX010",
            "proxy-timeouts-missing",
            "warning",
            "proxying location without explicit proxy timeouts",
            """`proxy_connect_timeout`, `proxy_read_timeout` and `proxy_send_timeout` default
            to 60s each. A hung backend then holds a client and a worker connection for a
            minute before failover starts. Set them (here or at server/http level) to what
            the service needs.""",
        ),
        _rule(
            "NGX011",
            "xff-from-client",
            "warning",
            "X-Forwarded-For passed through from the client",
            """`$proxy_add_x_forwarded_for` and `$http_x_forwarded_for` keep whatever the
            client sent in X-Forwarded-For, so any client can claim any address to a backend
            that trusts the header (rate limits, allow-lists, audit logs). At the edge, set
            it from `$remote_addr`; behind a trusted proxy, use the realip module first.""",
        ),
        _rule(
            "NGX012",
            "lua-redis-no-timeout",
            "warning",
            "Lua Redis client without timeouts",
            """A Redis call without `set_timeout`/`set_timeouts` waits for
            lua_socket_read_timeout (60s by default): a slow Redis stalls every request that
            touches the cache. Set a timeout of a few hundred milliseconds and serve from
            the backend when it fires.""",
        ),
        _rule(
            "NGX013",
            "lua-redis-no-keepalive",
            "warning",
            "Lua Redis client without set_keepalive",
            """Without `set_keepalive` every request opens (and closes) a new TCP connection
            to Redis. Under load that exhausts ephemeral ports and Redis's connection limit.
            Return the connection to the pool with `red:set_keepalive(idle_ms, size)`.""",
        ),
        _rule(
            "NGX014",
            "cache-key-client-host",
            "warning",
            "cache key built from the client's Host header",
            """`$http_host` (`ngx.var.http_host` in Lua) is whatever the client sent. A
            cache key built from it lets a client create unbounded distinct entries, or
            store a response under a key another virtual host reads (cache poisoning). Use
            `$host` (normalized, falls back to server_name) or the configured server name.""",
        ),
        _rule(
            "NGX015",
            "lua-package-path-no-default",
            "warning",
            "lua_package_path without the trailing ';;'",
            """`;;` stands for the default search path. Without it, modules that ship with
            OpenResty or the distribution (resty.core, resty.redis, cjson) are not found
            and `require` fails at runtime, not at `nginx -t`.""",
        ),
        _rule(
            "NGX016",
            "nginxgen-round-trip",
            "error",
            "generated config differs from what nginxgen generates",
            """The file carries nginxgen's header (`# nginxgen: spec=...`), so it
            must keep the generator's invariants: one http block with one server block;
            upstreams hold only server/zone/keepalive/balancer directives, each server as
            `address weight= max_fails= fail_timeout= [backup]`; no upstream is defined
            twice or left unused; every location proxies to an upstream defined in the file
            or answers with `return`. A difference means a hand edit (overwritten at the
            next render) or a template change that needs review.""",
        ),
        _rule(
            "NGX017",
            "suppression-invalid",
            "warning",
            "suppression without a reason, or naming an unknown rule",
            """Write `# nginxgen: disable=RULE[,RULE] why this is fine` on the directive's
            line, on the line above it, or first thing in a block; per-path ignores in
            .nginxgen-lint.yaml need a `reason:` too. The reason is what a reviewer reads a
            year later; a rule id that does not exist suppresses nothing.""",
        ),
        _rule(
            "NGX018",
            "unknown-directive",
            "warning",
            "unknown directive",
            """Neither nginx's core modules nor the Lua/NDK modules know this directive: a
            typo, or a third-party module. `nginx -t` fails on it unless the module is
            loaded. Run with --nginx-test against your build to be sure.""",
        ),
        _rule(
            "NGX019",
            "nginx-test",
            "error",
            "nginx -t rejects the config",
            """With --nginx-test, the nginx (or openresty) binary on PATH checks the file
            itself. Its [emerg] messages are errors and its [warn] messages warnings.""",
        ),
    )
}
_BY_NAME = {r.name: r.id for r in RULES.values()}

NEXT_UPSTREAM_VALUES = {
    "error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
    "http_403", "http_404", "http_429", "non_idempotent", "off",
}  # fmt: skip
HASH_BALANCERS = {"hash", "ip_hash", "random"}
CACHE_KEYS = {"proxy_cache_key", "fastcgi_cache_key", "uwsgi_cache_key", "scgi_cache_key"}
_GENERATED_SERVER = re.compile(r"^weight=\d+$|^max_fails=\d+$|^fail_timeout=\d+m?s$")


def canonical(rule: str) -> str | None:
    """A rule id from an id or a name ('NGX010', 'ngx010', 'proxy-timeouts-missing')."""
    if rule in RULES or rule.startswith("gixy/"):
        return rule
    if rule.upper() in RULES:
        return rule.upper()
    return _BY_NAME.get(rule.lower())


# --- upstreams ------------------------------------------------------------------------


@on("upstream")
def check_upstream(node: Node, w: Walk) -> None:
    name = node["args"][0] if node["args"] else ""
    servers: list[Node] = []
    balancer = ""
    keepalive = False
    for child in w.children(node):
        d = child["directive"]
        if d == "server":
            servers.append(child)
        elif d in HASH_BALANCERS:
            balancer = d
        elif d == "keepalive":
            keepalive = True
        elif d not in GENERATED_UPSTREAM_DIRECTIVES and w.facts.generated:
            w.facts.generated_problems.append(
                (w.file, child["line"], f"upstream {name!r} has directive {d!r}", w.suppressed)
            )
    backups = [s for s in servers if "backup" in s["args"][1:]]
    upstream_empty(name, node, servers, w)
    upstream_only_backup(name, node, servers, backups, w)
    upstream_duplicate_server(name, servers, w)
    backup_with_hash_balancer(name, balancer, backups, w)
    if w.facts.generated:
        generated_server_shape(name, servers, w)
    fact = UpstreamFact(
        name, w.file, node["line"], keepalive, len(servers) - len(backups), w.suppressed
    )
    if name in w.facts.upstreams:
        w.facts.duplicate_upstreams.append(fact)
    else:
        w.facts.upstreams[name] = fact


def upstream_empty(name: str, node: Node, servers: list[Node], w: Walk) -> None:
    if not servers:
        w.hit("NGX001", node["line"], f"upstream {name!r} has no servers")


def upstream_only_backup(
    name: str, node: Node, servers: list[Node], backups: list[Node], w: Walk
) -> None:
    if servers and len(backups) == len(servers):
        w.hit("NGX002", node["line"], f"upstream {name!r} has only backup servers")


def upstream_duplicate_server(name: str, servers: list[Node], w: Walk) -> None:
    if len(servers) < 2:
        return
    seen: set[str] = set()
    for s in servers:
        address = s["args"][0] if s["args"] else ""
        if address in seen:
            w.hit("NGX007", s["line"], f"server {address} appears twice in upstream {name!r}")
        seen.add(address)


def backup_with_hash_balancer(name: str, balancer: str, backups: list[Node], w: Walk) -> None:
    if balancer:
        for s in backups:
            w.hit(
                "NGX008",
                s["line"],
                f"backup server in upstream {name!r} balanced by {balancer}: never used",
            )


def generated_server_shape(name: str, servers: list[Node], w: Walk) -> None:
    for s in servers:
        args = s["args"]
        rest = args[1:-1] if args and args[-1] == "backup" else args[1:]
        if len(rest) != 3 or not all(_GENERATED_SERVER.match(a) for a in rest):
            w.facts.generated_problems.append(
                (w.file, s["line"], f"upstream {name!r} server {' '.join(args)}", w.suppressed)
            )


# --- proxying -------------------------------------------------------------------------


@on("proxy_pass")
def check_proxy_pass(node: Node, w: Walk) -> None:
    if not node["args"]:
        return
    if w.facts.generated is not None and _in_internal_location(w):
        return  # nginxgen's own subrequest locations (auth_request) proxy to a URL
    w.facts.proxy_passes.append(
        ProxyPassFact(node["args"][0], w.file, node["line"], w.scope, w.suppressed)
    )
    if w.scope.in_http:
        proxy_timeouts_missing(node, w)


def proxy_timeouts_missing(node: Node, w: Walk) -> None:
    missing = [t for t in TIMEOUTS if t not in w.scope.timeouts]
    if missing:
        w.hit("NGX010", node["line"], f"proxy_pass without {', '.join(missing)} (default 60s)")


def proxy_host(target: str) -> str | None:
    """The host part of an http(s):// proxy_pass target; None for variables and sockets."""
    if "$" in target:
        return None
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


@at_end
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


def proxy_pass_unresolved_name(p: ProxyPassFact, host: str, w: Walk) -> None:
    w.hit(
        "NGX003",
        p.line,
        f"proxy_pass {p.target}: {host!r} is no upstream here; nginx resolves it once, at start",
        file=p.file,
        suppressed=p.suppressed,
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


@on("proxy_next_upstream")
def check_next_upstream(node: Node, w: Walk) -> None:
    args = node["args"]
    next_upstream_invalid(args, node, w)
    if "non_idempotent" in args:
        w.hit("NGX006", node["line"])


def next_upstream_invalid(args: list[str], node: Node, w: Walk) -> None:
    bad = [a for a in args if a not in NEXT_UPSTREAM_VALUES]
    if bad:
        w.hit("NGX004", node["line"], f"proxy_next_upstream: invalid value(s) {', '.join(bad)}")
    if "off" in args and len(args) > 1:
        w.hit("NGX004", node["line"], "proxy_next_upstream: 'off' combined with other values")


@on("proxy_next_upstream_tries")
def next_upstream_unlimited_tries(node: Node, w: Walk) -> None:
    if node["args"] == ["0"]:
        w.hit("NGX005", node["line"])


@on("proxy_set_header")
def xff_from_client(node: Node, w: Walk) -> None:
    args = node["args"]
    if len(args) >= 2 and args[0].lower() == "x-forwarded-for":
        for var in ("$proxy_add_x_forwarded_for", "$http_x_forwarded_for"):
            if var in args[1]:
                w.hit("NGX011", node["line"], f"X-Forwarded-For set from {var}")
                return


@on(*CACHE_KEYS)
def cache_key_client_host(node: Node, w: Walk) -> None:
    if any("$http_host" in a for a in node["args"]):
        w.hit("NGX014", node["line"], f"{node['directive']} uses $http_host")


# --- Lua ------------------------------------------------------------------------------

_REDIS = re.compile(r"""require\s*\(?\s*["'](?:resty|nginx)\.redis["']""")
_LUA_HOST = re.compile(r"ngx\.var\.http_host|ngx\.var\[\s*[\"']http_host[\"']\s*\]")
_LUA_KEY = re.compile(r"key", re.IGNORECASE)
LUA_BLOCKS = tuple(
    f"{phase}_by_lua_block"
    for phase in (
        "init", "init_worker", "set", "rewrite", "access", "content", "header_filter",
        "body_filter", "log", "balancer", "ssl_certificate",
    )
)  # fmt: skip


@on(*LUA_BLOCKS)
def check_lua_block(node: Node, w: Walk) -> None:
    if not node["args"]:
        return
    code = node["args"][-1]  # set_by_lua_block $var { code }: the code is the last arg
    lua_redis(code, node["line"], w)
    lua_cache_key_host(code, node["line"], w)


def lua_lines(code: str, first: int) -> Iterable[tuple[int, str]]:
    """Lines of a Lua block with their line number in the file (the block opens on `first`)."""
    for offset, text in enumerate(code.split("\n")):
        yield first + offset, text


def lua_redis(code: str, line: int, w: Walk) -> None:
    m = _REDIS.search(code)
    if m is None:
        return
    at = line + code.count("\n", 0, m.start())
    if "set_timeout" not in code:  # set_timeout (nginx.redis) and set_timeouts (resty.redis)
        w.hit("NGX012", at, "Redis client used without set_timeout/set_timeouts")
    if "set_keepalive" not in code:
        w.hit("NGX013", at, "Redis client used without set_keepalive")


def lua_cache_key_host(code: str, line: int, w: Walk) -> None:
    if "http_host" not in code:
        return
    for at, text in lua_lines(code, line):
        if _LUA_HOST.search(text) and _LUA_KEY.search(text):
            w.hit("NGX014", at, "cache key built from ngx.var.http_host")


@on("lua_package_path", "lua_package_cpath")
def lua_package_path_no_default(node: Node, w: Walk) -> None:
    if node["args"] and not node["args"][0].endswith(";;"):
        w.hit("NGX015", node["line"], f"{node['directive']} does not end with ';;'")


# --- nginxgen's own output ------------------------------------------------------------


@on("http")
def count_http(node: Node, w: Walk) -> None:
    w.facts.http_blocks += 1


@on("server")
def count_server(node: Node, w: Walk) -> None:
    if "block" in node and w.parent == "http" and not _is_status_server(node):
        w.facts.server_blocks += 1


def _is_status_server(node: Node) -> bool:
    """The loopback status/metrics server nginxgen renders beside the public one."""
    return any(
        d["directive"] == "server_name" and d["args"] == [STATUS_SERVER_NAME]
        for d in node.get("block", [])
    )


@marker
def _internal_location(node: Node) -> str | None:
    args = node["args"]
    if node["directive"] == "location" and args[-1:] and args[-1].startswith("/_nginxgen/"):
        return "nginxgen-internal"
    return None


def _in_internal_location(w: Walk) -> bool:
    return w.marked("nginxgen-internal")


@on("location")
def record_location(node: Node, w: Walk) -> None:
    if w.facts.generated is None:
        return
    proxies = returns = False
    for child in w.children(node):
        d = child["directive"]
        proxies = proxies or d == "proxy_pass"
        returns = returns or d in ("return", "stub_status", "content_by_lua_block")
    w.facts.locations.append(
        LocationFact(tuple(node["args"]), w.file, node["line"], proxies, returns, w.suppressed)
    )


@at_end
def nginxgen_round_trip(w: Walk) -> None:
    """The generator's invariants, checked without re-planning (see NGX016's explanation)."""
    facts = w.facts
    if facts.generated is None:
        return
    main = w.configs[0]["file"]
    problems: list[tuple[str, int | None, str, frozenset[str]]] = list(facts.generated_problems)

    def problem(file: str, line: int | None, message: str, off: frozenset[str]) -> None:
        problems.append((file, line, message, off))

    if facts.http_blocks != 1 or facts.server_blocks != 1:
        blocks = f"{facts.http_blocks} http and {facts.server_blocks} server blocks"
        problem(main, None, f"{blocks}, expected 1 each", frozenset())
    for dup in facts.duplicate_upstreams:
        problem(dup.file, dup.line, f"upstream {dup.name!r} defined twice", dup.suppressed)
    used: set[str] = set()
    for p in facts.proxy_passes:
        host = proxy_host(p.target)
        if host is None or host not in facts.upstreams:
            problem(p.file, p.line, f"proxy_pass {p.target}: no such upstream", p.suppressed)
        else:
            used.add(host)
    for name, up in facts.upstreams.items():
        if name not in used:
            problem(up.file, up.line, f"upstream {name!r} is not used", up.suppressed)
    for loc in facts.locations:
        if not (loc.proxies or loc.returns):
            where = " ".join(loc.args)
            problem(
                loc.file, loc.line, f"location {where} neither proxies nor returns", loc.suppressed
            )
    for file, line, message, suppressed in problems:
        w.hit("NGX016", line, f"generated config: {message}", file=file, suppressed=suppressed)
