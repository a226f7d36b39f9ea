"""The first pass of a watch run in nginx.endpoints dynamic mode: keep the config nginx
serves when only endpoints moved since it was installed.

nginx.conf embeds the rendered endpoints (the plan document `init` seeds the feed with),
so after the previous watcher pushed, or while the sidecar was down, the new render's
text differs from the installed one although nothing a reload changes does. Installing
it would reload nginx on every sidecar restart. Instead the caller (Applier.apply)
adopts the installed config as what serves and pushes what differs from what nginx
actually serves: the boot snapshot, the last endpoint set nginx confirmed (deploy/feed.py)
— not the installed file's endpoints, which pushes have overtaken.

What is not promised: a full push (no snapshot to trust) of more than the feed's
`max_body` (names.FEED_MAX_BODY) is refused with a 413; the caller then installs and
reloads, as it does for any push that is not confirmed.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ..deploy.feed import FeedClient
from ..deploy.journal import journal_path, read_journal, replay
from ..model.plan import Plan
from ..plan.endpoints import EndpointSet, dynamic_upstreams, endpoint_set, plan_document
from ..render.conf import config_generation, feed_plan
from ..render.filters import lua_pieces
from ..util.token_file import TokenFileError, read_token

MAX_SNAPSHOT = 64 << 20  # bytes read of a snapshot, as feed.snapshot_generation reads


class Served(NamedTuple):
    """The endpoints nginx was last confirmed to serve, and their generation."""

    generation: int
    services: dict[str, EndpointSet]


def read_served(path: str) -> Served | None:
    """What nginx loads at start from the boot snapshot at `path` and its journal: the
    snapshot with the journal's records applied, at the generation of the last one
    (deploy/journal.replay); None when there is no snapshot or it cannot be read."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_SNAPSHOT))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    gen, services = doc.get("generation"), doc.get("services")
    if not isinstance(gen, int) or not isinstance(services, dict):
        return None
    done = replay(gen, services, read_journal(journal_path(path)))
    return Served(done.generation, done.services)


def feed_generation(status_listen: str, token_path: str) -> int | None:
    """The generation nginx's endpoint feed holds; None when it cannot be asked."""
    try:
        token = read_token(token_path, "nginx.endpoints_token")
    except TokenFileError:
        return None  # the push reads it again and says why
    answer = FeedClient(status_listen, token, timeout=2.0).status()
    gen = answer.get("generation") if answer is not None else None
    return gen if isinstance(gen, int) else None


def served_delta(plan: Plan, served: Served | None, held: int | None) -> dict[str, EndpointSet]:
    """The services of `plan` whose endpoints differ from what nginx serves: from the
    snapshot's when the feed holds exactly its generation (a push since, or a snapshot
    written for a reload that did not serve, makes it someone else's); all of them when
    there is no snapshot to trust."""
    trusted = served is not None and held == served.generation
    known = served.services if served is not None and trusted else {}
    out: dict[str, EndpointSet] = {}
    for u in dynamic_upstreams(plan):
        want = endpoint_set(u)
        if not trusted or known.get(u.name) != want:
            out[u.name] = want
    return out


def _services_mark(plan: Plan) -> str:
    """The start of the plan document as `init` gets it, up to its endpoint sets: the
    same Lua pieces for two plans whose upstreams (and balancing methods) are the same."""
    doc = plan_document(plan)
    # "services" is the document's last key: its JSON ends `"services":{}}` here.
    head = json.dumps({**doc, "services": {}}, separators=(",", ":"))
    return lua_pieces(head[: -len("{}}")])[: -len('"}')]


def same_but_endpoints(installed: str, text: str, plan: Plan) -> bool:
    """Whether `installed` is `text` (rendered from `plan`) but for the endpoint sets in
    its plan document and the generation that hashes them: everything nginx.conf holds
    that a reload would change is the same (Plan.structure, and the templates, the token
    digest, the Lua tree too). No parsing: the text around the document must match byte
    for byte, and the document's pieces have no raw brace (filters.lua_string)."""
    pieces = feed_plan(plan)
    if pieces is None:
        return False
    at = text.find(f"plan = {pieces},")
    if at < 0:
        return False
    start = at + len("plan = ")
    head, tail = text[:start], text[start + len(pieces) :]
    if not installed.startswith(head):
        return False
    end = installed.find("}", start)
    if end < 0 or not installed.startswith(_services_mark(plan), start):
        return False
    ours, theirs = config_generation(text), config_generation(installed)
    if ours is None or theirs is None:
        return False
    mine = tail.rpartition(f"return 200 {ours};")
    other = installed[end + 1 :].rpartition(f"return 200 {theirs};")
    return bool(mine[1]) and bool(other[1]) and (mine[0], mine[2]) == (other[0], other[2])
