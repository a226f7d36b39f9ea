"""The sidecar's sampler of nginx's /metrics, against a stand-in status listener."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nginxgen.status.traffic import Counts, PeerTraffic
from nginxgen.watch.sampler import TrafficSampler
from tests.helpers import free_port
from tests.helpers.clock import FakeClock
from tests.status.test_status import METRICS


@pytest.fixture
def nginx_status() -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """Answers /metrics with the test's last (status, text)."""
    answers: list[tuple[int, str]] = [(200, METRICS)]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            code, text = answers[-1]
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def test_samples_go_into_the_window_and_failures_leave_it_alone(nginx_status, caplog) -> None:
    listen, answers = nginx_status
    clock, traffic = FakeClock(), PeerTraffic()
    sampler = TrafficSampler(lambda: listen, traffic, clock=clock)
    assert sampler.sample()
    clock.advance(5)
    answers.append((200, METRICS.replace("} 90", "} 95")))
    assert sampler.sample()
    window = traffic.last()
    assert window.seconds == 5 and window.peers[("carts", "10.0.0.1:80")] == Counts(5, 0)
    answers.append((404, "not found"))  # metrics turned off in nginx
    assert not sampler.sample()
    answers.append((200, "not {prometheus text"))
    assert not sampler.sample() and not sampler.sample()
    assert caplog.text.count("does not parse") == 1  # said once per bad spell
    assert len(traffic.samples) == 2
    # Nothing listening, or the spec's metrics off (no listener to ask): no sample.
    assert not TrafficSampler(lambda: f"127.0.0.1:{free_port()}", traffic, clock=clock).sample()
    assert not TrafficSampler(lambda: None, traffic, clock=clock).sample()


def test_the_thread_samples_and_stops(nginx_status) -> None:
    listen, _ = nginx_status
    sampled = threading.Event()
    traffic = PeerTraffic()
    sampler = TrafficSampler(
        lambda: listen, traffic, clock=FakeClock(), every=0.05, on_sample=sampled.set
    ).start()
    try:
        assert sampled.wait(30)
    finally:
        sampler.stop()
    assert traffic.samples
