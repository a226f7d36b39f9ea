"""The endpoint feed, sidecar side (nginx.endpoints: dynamic; docs/endpoints-feed.md).

`push_endpoints` sends the services whose endpoints changed (a delta, never the whole
set) with a new generation to the feed location on nginx's loopback status listener,
then waits until every worker reports that generation, and answers one `Pushed` record:
taken and confirmed, or why not (refused with nginx's own sentence, no answer, not
confirmed in time). The caller falls back to a reload when it is not `ok` — nothing here
decides that. `write_snapshot` persists the full endpoint set that nginx loads at start;
`SnapshotTexts.record` persists a confirmed push as a journal record (deploy/journal.py).

The token lives in a file nginxgen creates with mode 0600 (`token_digest`); nginx.conf
holds only its sha256, and the token is sent only to the loopback listener, never logged.

What is not promised: a push confirmed here may be undone by a reload onto an older
config only if that config's plan or a snapshot is newer, which `Generations` rules out
for what this sidecar writes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model.names import FEED_PATH, FEED_STATUS_PATH
from ..model.plan import Plan, Upstream
from ..plan.endpoints import EndpointSet, dynamic_upstreams, endpoint_set
from ..util.atomic_write import InstallError, write_atomic
from ..util.clock import Clock
from ..util.token_file import TokenFileError, create_token, read_token
from .journal import FileId, Foreign, Journal, effective_generation, file_id, journal_path
from .journal import adopt as adopt_journal

CONFIRM_POLL = 0.01  # seconds between two status reads while confirming
MAX_ERROR = 300  # characters of nginx's error sentence kept in a log line
LOCKED_DIGEST = "0" * 64  # no token hashes to it: finding one is a sha256 preimage


def token_digest(path: str) -> tuple[str, str | None]:
    """(sha256 hex of the feed token in `path`, a note or None). The file is created
    (mode 0600, a random 256-bit token) when missing and its directory exists; when the
    directory does not exist either (e.g. `render` to stdout before any install), the
    digest is one no token hashes to (all zeros), so the feed refuses every push, and
    the note says so. TokenFileError: the file exists but cannot be used (readable by
    others, empty, ...)."""
    where = f"nginx.endpoints_token {path}"
    if not os.path.lexists(path):
        if not Path(path).parent.is_dir():
            locked = LOCKED_DIGEST
            note = (
                f"{where}: no such file and no directory to create it in; this config's "
                "endpoint feed refuses every push (watch creates the token)"
            )
            return locked, note
        try:
            create_token(path)
        except OSError as exc:
            raise TokenFileError(
                f"{where}: cannot create: {(exc.strerror or '').lower()}"
            ) from None
    return hashlib.sha256(read_token(path, where)).hexdigest(), None


@dataclass(frozen=True)
class Pushed:
    """What one push did. `status` is nginx's HTTP answer (0: none)."""

    ok: bool  # taken and served by every worker
    generation: int
    services: int  # how many services the push carried
    status: int = 0
    error: str = ""  # one sentence: why it is not ok
    confirmed: bool = False
    waited: float = 0.0  # seconds from the request to the confirmation (or giving up)
    posted: float = 0.0  # seconds the request itself took (nginx committed it, or refused)
    current: int | None = None  # the feed's generation, when it refused a stale one (409)
    workers: tuple[int, ...] = ()  # the PIDs that confirmed

    @property
    def result(self) -> str:
        """The `nginxgen_pushes_total{result}` label."""
        if self.ok:
            return "confirmed"
        if self.status == 0:
            return "unreachable"
        if self.status == 200:
            return "unconfirmed"
        return "refused"


class FeedClient:
    """HTTP calls to the feed's two locations on the status listener."""

    def __init__(self, status_listen: str, token: bytes, timeout: float = 5.0) -> None:
        host, _, port = status_listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._auth = "Bearer " + token.decode("ascii")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, decoded JSON answer or None); (0, reason) when nginx does not answer."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Authorization": self._auth, "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, None

    def push(self, document: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(document, separators=(",", ":")).encode("ascii")
        return self._call("POST", FEED_PATH, body)

    def status(self) -> dict[str, Any] | None:
        status, answer = self._call("GET", FEED_STATUS_PATH)
        return answer if status == 200 and isinstance(answer, dict) else None


def push_document(generation: int, services: dict[str, EndpointSet]) -> dict[str, Any]:
    return {"generation": generation, "services": services}


def push_endpoints(
    client: FeedClient,
    generation: int,
    services: dict[str, EndpointSet],
    *,
    confirm_timeout: float,
    clock: Clock | None = None,
) -> Pushed:
    """POST the delta, then poll the status until every worker serves `generation`."""
    clock = clock or Clock()
    start = clock.monotonic()
    n = len(services)
    status, answer = client.push(push_document(generation, services))
    posted = clock.monotonic() - start
    if status != 200:
        if status == 0:
            why = f"nginx's endpoint feed does not answer ({answer})"
        else:
            said = answer.get("error") if isinstance(answer, dict) else None
            why = f"nginx refused the push ({status}): {str(said or 'no reason given')[:MAX_ERROR]}"
        current = answer.get("current") if isinstance(answer, dict) else None
        current = current if isinstance(current, int) else None
        return Pushed(False, generation, n, status, why, posted=posted, current=current)
    last: dict[str, Any] | None = None
    while True:
        last = client.status()
        waited = clock.monotonic() - start
        if last is not None and last.get("generation") == generation and last.get("converged"):
            pids = tuple(sorted(w.get("pid", 0) for w in last.get("workers", ())))
            return Pushed(
                True,
                generation,
                n,
                status,
                confirmed=True,
                waited=waited,
                posted=posted,
                workers=pids,
            )
        if waited >= confirm_timeout:
            seen = "no answer" if last is None else f"generation {last.get('generation')}"
            if last is not None and not last.get("converged"):
                seen += ", not every worker"
            why = (
                f"the workers did not all serve generation {generation} within "
                f"{confirm_timeout:g}s (status: {seen})"
            )
            return Pushed(False, generation, n, status, why, waited=waited, posted=posted)
        clock.sleep(CONFIRM_POLL)


class Generations:
    """One counter for pushes and snapshots: strictly increasing, and a millisecond clock
    at heart, so a restarted sidecar continues above what it pushed before (Lua refuses
    a generation that is not newer, and a start or reload keeps the newest)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last = 0

    def next(self) -> int:
        now_ms = int(self.clock.wall().timestamp() * 1000)
        self.last = max(self.last + 1, now_ms)
        return self.last

    def observe(self, seen: int | None) -> None:
        """A generation nginx holds (status answer, a 409, the snapshot)."""
        if isinstance(seen, int) and seen > self.last:
            self.last = seen


def write_snapshot(path: str, generation: int, services: dict[str, EndpointSet]) -> str:
    """The boot snapshot: every service's endpoints, atomically (temp file + rename), and
    an empty journal after it. Returns a note when the journal could not be started
    (the snapshot alone serves: an older journal names another base and is ignored)."""
    doc = push_document(generation, services)
    write_atomic(path, json.dumps(doc, separators=(",", ":")) + "\n", backup=False)
    return _start_journal(path, generation)[1]


def _start_journal(path: str, generation: int) -> tuple[Journal | None, str]:
    # Only after the snapshot: a crash in between leaves the old journal, of another base.
    try:
        return Journal.start(journal_path(path), generation, like=os.stat(path)), ""
    except InstallError as exc:  # an OSError too: first
        return None, f"no endpoint journal ({exc}); the next push rewrites the snapshot"
    except OSError as exc:
        why = f"cannot stat {path}: {(exc.strerror or str(exc)).lower()}"
        return None, f"no endpoint journal ({why}); the next push rewrites the snapshot"


# The journal stays under a quarter of the snapshot: a record appended costs what the push
# carried; the rewrite it spares (the whole snapshot) comes once every many pushes, and
# nginx's start reads at most a quarter more than the snapshot alone.
JOURNAL_SHARE = 4


@dataclass(frozen=True)
class Persisted:
    """How a confirmed endpoint set reached the disk: a journal record, or the whole
    snapshot rewritten (`full`); `note`: the journal could not be started."""

    full: bool
    size: int  # bytes written
    note: str = ""


class SnapshotTexts:
    """The boot snapshot and its journal (deploy/journal.py), as one watcher writes them.

    The snapshot's text is kept as one cached piece per service: at 10,000 services
    serialising it afresh costs far more than the push. A piece is reused only for the
    very Upstream object it was made from (plans are immutable and the plan memo hands an
    unchanged service the same object; the cache holds it, so its id cannot be recycled);
    a service not in the plan is forgotten with it.

    After a push, `record` appends the delta to the journal when what is on disk is the
    plan the delta starts from and the very files this run left (same inode and size of
    snapshot and journal: `nginxgen render -o` or a second watcher may have rewritten them
    since, and our record on their base would replay to a mix); it rewrites the snapshot
    instead when it is not (the first write of this run, a write that failed, another
    path, another writer), or when the journal would grow past a quarter of the snapshot
    (JOURNAL_SHARE). A compaction that fails (disk full) leaves the old pair intact: the
    record is appended to it and the rewrite tried again COMPACT_RETRY records later.
    `advance` and `adopt` say that a plan moved without a push, so the next push appends."""

    def __init__(self) -> None:
        self._pieces: dict[str, tuple[Upstream, str]] = {}
        self._path = ""
        self._journal: Journal | None = None
        self._on_disk: Plan | None = None  # the plan whose endpoints snapshot + journal hold
        self._snapshot: FileId | None = None  # the snapshot as written (its size: the share)
        self._defer = 0  # records to append before the next compaction try

    def document(self, generation: int, plan: Plan) -> str:
        """What `write_snapshot(path, generation, endpoints(plan))` writes, the same text."""
        known, pieces = self._pieces, {}
        for u in dynamic_upstreams(plan):
            piece = known.get(u.name)
            if piece is None or piece[0] is not u:
                text = json.dumps(endpoint_set(u), separators=(",", ":"))
                piece = (u, f"{json.dumps(u.name)}:{text}")
            pieces[u.name] = piece
        self._pieces = pieces
        body = ",".join(text for _, text in pieces.values())
        return f'{{"generation":{generation},"services":{{{body}}}}}\n'

    def write(self, path: str, generation: int, plan: Plan) -> Persisted:
        """The boot snapshot of `plan`, atomically, and a new journal (InstallError: the
        snapshot was not written)."""
        self._on_disk = self._journal = self._snapshot = None  # until both are known
        text = self.document(generation, plan)
        write_atomic(path, text, backup=False)
        try:
            ident = file_id(os.stat(path))
        except OSError:
            return Persisted(True, len(text), "")  # written; the next push writes it again
        self._path, self._snapshot, self._on_disk, self._defer = path, ident, plan, 0
        self._journal, note = _start_journal(path, generation)
        return Persisted(True, len(text), note)

    def record(
        self,
        path: str,
        generation: int,
        plan: Plan,
        delta: dict[str, EndpointSet],
        base: Plan | None,
    ) -> Persisted:
        """Persist a confirmed push of `delta`, which took nginx from `base` to `plan`:
        one journal record, or the whole snapshot (see the class doc). InstallError:
        neither was written; the next call rewrites the snapshot."""
        journal = self._journal
        if journal is None or base is None or base is not self._on_disk or not self._ours(path):
            return self.write(path, generation, plan)
        doc = push_document(generation, delta)
        payload = json.dumps(doc, separators=(",", ":")).encode("ascii")
        assert self._snapshot is not None  # with the journal
        if self._defer > 0:
            self._defer -= 1
        elif (journal.size + len(payload) + 32) * JOURNAL_SHARE > self._snapshot.size:
            kept = self._snapshot, self._pieces
            try:
                return self.write(path, generation, plan)  # compaction: a new journal
            except InstallError as exc:
                if not self._unchanged(path, kept[0]):
                    raise
                # The rename did not happen: the old pair serves; append to it for now.
                self._snapshot, self._pieces, self._path = kept[0], kept[1], path
                self._defer, note = COMPACT_RETRY, f"endpoint snapshot not compacted: {exc}"
                return self._append(journal, payload, plan, note)
        return self._append(journal, payload, plan, "")

    def _append(self, journal: Journal, payload: bytes, plan: Plan, note: str) -> Persisted:
        self._on_disk = self._journal = None  # until the record is down
        try:
            journal.append(payload)
        except Foreign:
            return self.write(self._path, _generation_of(payload), plan)
        self._on_disk, self._journal = plan, journal
        return Persisted(False, len(payload), note)

    def _ours(self, path: str) -> bool:
        """Whether the snapshot at `path` is the one this run wrote (the journal's own
        check is in Journal.append)."""
        return path == self._path and self._unchanged(path, self._snapshot)

    @staticmethod
    def _unchanged(path: str, ident: FileId | None) -> bool:
        try:
            return ident is not None and file_id(os.stat(path)) == ident
        except OSError:
            return False

    def advance(self, old: Plan | None, new: Plan) -> None:
        """`new` replaced `old` as the plan that serves without a push (no endpoint moved:
        a tag, a setting the feed does not carry): when the disk held `old`, it holds
        `new`, and the next push appends to the journal instead of a full rewrite."""
        if old is not None and self._on_disk is old:
            self._on_disk = new

    def adopt(self, path: str, generation: int, plan: Plan) -> bool:
        """First pass of a run: the snapshot at `path` and its journal, as found, hold
        `plan`'s endpoints at `generation` (the caller checked: the feed holds exactly
        that generation, and the replay differs from `plan` in nothing). The next push
        appends to them, when the journal continues the snapshot and ends whole."""
        base = _leading_generation(path)
        if base is None:
            return False
        try:
            ident = file_id(os.stat(path))
        except OSError:
            return False
        journal = adopt_journal(journal_path(path), base)
        if journal is None or effective_generation(journal.path, base) != generation:
            return False
        self._path, self._snapshot, self._journal, self._on_disk = path, ident, journal, plan
        self._defer = 0
        return True


# After a compaction that failed (disk full), this many records are appended before the
# next try: each is ~1 kB where the rewrite needs the whole snapshot's room again.
COMPACT_RETRY = 16


def _generation_of(payload: bytes) -> int:
    return int(json.loads(payload)["generation"])


def _leading_generation(path: str) -> int | None:
    """The generation the snapshot at `path` starts with, as SnapshotTexts writes it,
    without reading the rest (7.9 MB at 10,000 services)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return None
    m = _LEADING.match(head)
    return int(m[1]) if m else None


_LEADING = re.compile(rb'\{"generation":(\d+),')


def snapshot_generation(path: str) -> int | None:
    """The generation nginx loads from the snapshot at `path` and its journal (the newest
    whole record that continues it), None when there is no snapshot to read."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(64 << 20))
    except (OSError, ValueError):
        return None
    gen = doc.get("generation") if isinstance(doc, dict) else None
    if not isinstance(gen, int):
        return None
    return effective_generation(journal_path(path), gen)
