"""Upstream blocks: servers nginx refuses, ignores or counts twice.

Also records each upstream as a fact (its keepalive, its primary servers, and for
generated files its directives and server lines) for the proxying and generated-config
checks that run once the whole file is walked.
"""

from __future__ import annotations

from ..findings import rule
from ..tree import Checks, Node, UpstreamFact, Walk

HASH_BALANCERS = {"hash", "ip_hash", "random"}

UPSTREAM_EMPTY = rule(
    "NGX001",
    "upstream-empty",
    "error",
    "upstream has no servers",
    """nginx refuses a config with an upstream block that holds no `server`
    ("no servers are inside upstream"), so one service with nobody alive would take
    the whole gateway down at the next reload. Route such a service to a deliberate
    `return 503` instead (nginxgen does this), or remove the upstream.""",
)


def upstream_empty(name: str, node: Node, servers: list[Node], w: Walk) -> None:
    if not servers:
        w.hit(UPSTREAM_EMPTY.id, node["line"], f"upstream {name!r} has no servers")


UPSTREAM_ONLY_BACKUP = rule(
    "NGX002",
    "upstream-only-backup",
    "error",
    "upstream has only backup servers",
    """Backup servers are used only while every primary server is down; with no
    primary at all, nginx refuses the config ("no servers in upstream"). Make at
    least one server a primary.""",
)


def upstream_only_backup(
    name: str, node: Node, servers: list[Node], backups: list[Node], w: Walk
) -> None:
    if servers and len(backups) == len(servers):
        w.hit(UPSTREAM_ONLY_BACKUP.id, node["line"], f"upstream {name!r} has only backup servers")


UPSTREAM_DUPLICATE_SERVER = rule(
    "NGX007",
    "upstream-duplicate-server",
    "error",
    "the same server appears twice in one upstream",
    """nginx accepts it and silently doubles that server's share of traffic (and of
    retries). It usually means two registry entries for one address, or a
    copy-paste mistake. List each address once and use `weight=`.""",
)


def upstream_duplicate_server(name: str, servers: list[Node], w: Walk) -> None:
    if len(servers) < 2:
        return
    seen: set[str] = set()
    for s in servers:
        address = s["args"][0] if s["args"] else ""
        if address in seen:
            w.hit(
                UPSTREAM_DUPLICATE_SERVER.id,
                s["line"],
                f"server {address} appears twice in upstream {name!r}",
            )
        seen.add(address)


BACKUP_WITH_HASH_BALANCER = rule(
    "NGX008",
    "backup-with-hash-balancer",
    "error",
    "backup server in an upstream balanced by hash, ip_hash or random",
    """These balancing methods do not support `backup`. When the method comes first,
    nginx refuses the config; when it comes after the servers, nginx accepts it and
    the backup server is never used as one. Use round-robin or least_conn with
    backups, or drop `backup`.""",
)


def backup_with_hash_balancer(name: str, balancer: str, backups: list[Node], w: Walk) -> None:
    if balancer:
        for s in backups:
            w.hit(
                "NGX008",
                s["line"],
                f"backup server in upstream {name!r} balanced by {balancer}: never used",
            )


def check_upstream(node: Node, w: Walk) -> None:
    name = node["args"][0] if node["args"] else ""
    servers: list[Node] = []
    others: list[Node] = []
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
        else:
            others.append(child)
    backups = [s for s in servers if "backup" in s["args"][1:]]
    upstream_empty(name, node, servers, w)
    upstream_only_backup(name, node, servers, backups, w)
    upstream_duplicate_server(name, servers, w)
    backup_with_hash_balancer(name, balancer, backups, w)
    generated = w.facts.generated is not None  # generated.py checks their shape at the end
    fact = UpstreamFact(
        name,
        w.file,
        node["line"],
        keepalive,
        len(servers) - len(backups),
        w.suppressed,
        servers=tuple(servers) if generated else (),
        others=tuple(others) if generated else (),
    )
    if name in w.facts.upstreams:
        w.facts.duplicate_upstreams.append(fact)
    else:
        w.facts.upstreams[name] = fact


RULES = (UPSTREAM_EMPTY, UPSTREAM_ONLY_BACKUP, UPSTREAM_DUPLICATE_SERVER, BACKUP_WITH_HASH_BALANCER)
CHECKS = Checks(on={"upstream": (check_upstream,)})
