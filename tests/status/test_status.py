"""nginxgen.status: the per-peer traffic window, the status document and its tables, the
verb and what it says when no sidecar answers. (Against a real sidecar and nginx:
tests/integration/test_status.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from nginxgen.status.command import NoSidecar, fetch, show
from nginxgen.status.traffic import Counts, PeerTraffic, peer_counts
from nginxgen.status.view import BadDocument, parse, tables
from tests.helpers import free_port

METRICS = """\
# HELP nginxgen_upstream_requests_total Attempts sent to each upstream peer.
# TYPE nginxgen_upstream_requests_total counter
nginxgen_upstream_requests_total{service="carts",peer="10.0.0.1:80",status="2xx"} 90
nginxgen_upstream_requests_total{service="carts",peer="10.0.0.1:80",status="5xx"} 10
nginxgen_upstream_requests_total{service="carts",peer="other",status="2xx"} 3
nginxgen_requests_total{route="/api/",service="carts",version="default",status="2xx"} 100
"""

DOC = {
    "generation": "3f2a9c",
    "served_generation": "3f2a9c",
    "window_seconds": 60,
    "services": {
        "carts": [
            {"id": "carts-1", "address": "10.0.0.1:8080", "state": "serving", "reason": "",
             "planned_weight": 10, "weight": 10, "requests": 120, "errors": 0},
            {"id": "carts-2", "address": "10.0.0.2:8080", "state": "warming", "percent": 30,
             "reason": "step 3 of 10", "planned_weight": 3, "weight": 2, "requests": 30,
             "errors": 1},
            {"id": "carts-3", "address": "10.0.0.3:8080", "state": "draining",
             "reason": "registry: draining", "planned_weight": 0, "weight": 0,
             "requests": None, "errors": None},
        ]
    },
}  # fmt: skip


def test_peer_counts_sum_status_classes_and_keep_5xx_apart() -> None:
    counts = peer_counts(METRICS)
    assert counts == {
        ("carts", "10.0.0.1:80"): Counts(100, 10),
        ("carts", "other"): Counts(3, 0),
    }


def test_the_window_is_the_last_minute_and_survives_an_nginx_restart() -> None:
    t = PeerTraffic(window=60)
    key = ("carts", "10.0.0.1:80")
    assert t.last().seconds == 0 and t.last().peers == {}
    for second in range(0, 121, 10):  # 1 request per second, sampled every 10 s
        t.add(float(second), {key: Counts(second, second // 10)})
    w = t.last()
    assert w.seconds == 60 and w.peers[key] == Counts(60, 6)
    assert len(t.samples) <= 8  # a window's worth, not the whole history
    t.add(130.0, {key: Counts(4, 0)})  # counters went down: nginx restarted
    assert t.last().peers[key] == Counts(4, 0)


def test_the_document_becomes_one_table_per_service() -> None:
    status = parse(DOC)
    console = Console(record=True, width=160, color_system=None)
    for table in tables(status):
        console.print(table)
    text = console.export_text()
    assert "carts" in text and "warming 30 %" in text and "draining" in text
    assert "step 3 of 10" in text and "generation 3f2a9c" in text
    row = next(line for line in text.splitlines() if "carts-2" in line)
    assert row.replace("│", " ").split()[-4:] == ["3", "2", "30", "1"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.pop("services"), "status.services"),
        (lambda d: d["services"]["carts"][1].update(state="sleeping"), "unknown state"),
        (lambda d: d["services"]["carts"][0].update(planned_weight="10"), "[0].planned_weight"),
        (lambda d: d["services"]["carts"][0].update(weight=True), "[0].weight"),
    ],
)
def test_a_bad_document_names_the_field(change, words: str) -> None:
    doc = json.loads(json.dumps(DOC))
    change(doc)
    with pytest.raises(BadDocument, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse(doc)


def test_no_sidecar_is_one_sentence() -> None:
    listen = f"127.0.0.1:{free_port()}"
    with pytest.raises(NoSidecar) as info:
        fetch(listen, timeout=1)
    assert str(info.value).startswith(f"no sidecar answers on {listen}")
    assert "\n" not in str(info.value)


@pytest.fixture
def sidecar() -> Iterator[tuple[str, list[object]]]:
    """A stand-in answering /status with whatever the test puts in `answers`."""
    answers: list[object] = [DOC]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != "/status":
                self.send_error(404)
                return
            body = json.dumps(answers[-1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def test_json_and_watch(sidecar) -> None:
    listen, answers = sidecar
    out = Console(record=True, width=160, color_system=None)
    show(listen, out, as_json=True)
    assert json.loads(out.export_text()) == DOC
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        answers.append({**DOC, "generation": "b7e1d0", "served_generation": "b7e1d0"})

    show(listen, out, watch=True, every=2.0, sleep=sleep, rounds=2)
    assert naps == [2.0]
    assert "generation b7e1d0" in out.export_text()


def test_an_unreadable_answer_is_one_sentence(sidecar) -> None:
    listen, answers = sidecar
    answers.append({"services": {"carts": [{"id": "x"}]}})
    with pytest.raises(NoSidecar, match="cannot read: services.carts\\[0\\].state"):
        show(listen, Console(record=True))


def spec_with(tmp_path, listen: str):
    from tests.helpers import write_spec

    return write_spec(
        tmp_path,
        {"watch": {"listen": listen}, "routes": [{"path": "/", "service": "app"}]},
        {"app": [{"id": "a", "address": "127.0.0.1:9"}]},
    )


def test_the_verb_says_in_one_sentence_when_no_sidecar_runs_or_none_can(tmp_path) -> None:
    from tests.helpers import run_cli

    listen = f"127.0.0.1:{free_port()}"
    result = run_cli("status", "-c", str(spec_with(tmp_path, listen)))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"error: no sidecar answers on {listen} (watch.listen): is `nginxgen watch` "
        "running with this spec?"
    )
    result = run_cli("status", "-c", str(spec_with(tmp_path, "off")), "--json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "watch.listen is off, so the sidecar serves no status" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_verb_finds_the_listener_in_the_spec(tmp_path, sidecar, monkeypatch) -> None:
    from tests.helpers import run_cli

    monkeypatch.setenv("COLUMNS", "160")
    listen, _ = sidecar
    result = run_cli("status", "-c", str(spec_with(tmp_path, listen)), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == DOC
    result = run_cli(
        "status", "-c", str(spec_with(tmp_path, listen.replace("127.0.0.1", "0.0.0.0")))
    )
    assert result.returncode == 0, result.stderr
    assert "warming 30 %" in result.stdout and "carts-3" in result.stdout


def test_json_watch_is_one_document_per_line(sidecar) -> None:
    listen, _ = sidecar
    out = Console(record=True, width=80, color_system=None)
    show(listen, out, as_json=True, watch=True, sleep=lambda s: None, rounds=3)
    lines = out.export_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) == DOC for line in lines)
