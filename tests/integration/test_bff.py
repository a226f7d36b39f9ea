"""The BFF layer end to end: aggregate routes and image_fit, rendered by the real CLI and
served by the real nginx (Lua module, image_filter) in front of real backends."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import AuthService, Backend, Nginx, free_port, require_nginx, run_cli, write_spec


class Barrier:
    """Backends that answer only once all `n` of them hold a request: parts sent one after
    another would never get there (each waits `timeout`, then fails)."""

    def __init__(self, n: int, timeout: float = 10.0) -> None:
        self.barrier = threading.Barrier(n, timeout=timeout)
        self.servers: list[ThreadingHTTPServer] = []

    def start(self, body: dict[str, Any]) -> int:
        barrier, payload = self.barrier, json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                try:
                    barrier.wait()
                    status = 200
                except threading.BrokenBarrierError:
                    status = 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return server.server_address[1]

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture
def bff(workdir: Path, nginx_runner: Callable[..., Nginx]) -> Callable[..., str]:
    """bff(routes, services) renders the spec with the CLI, starts nginx, returns its URL."""
    require_nginx("lua")

    def start(routes: list[dict[str, Any]], services: dict[str, Any], **extra: Any) -> str:
        port = free_port()
        nginx = {"flavor": "nginx", "listen": f"127.0.0.1:{port}", "pid": "nginx.pid"}
        spec = write_spec(workdir, {"nginx": nginx, "routes": routes, **extra}, services)
        conf = workdir / "nginx.conf"
        result = run_cli("render", "-c", str(spec), "-o", str(conf))
        assert result.returncode == 0, result.stderr
        nginx_runner(conf, workdir / "nginx.pid", port)
        return f"http://127.0.0.1:{port}"

    return start


def instance(name: str, port: int) -> list[dict[str, Any]]:
    return [{"id": f"{name}-1", "address": f"127.0.0.1:{port}"}]


HOME = {
    "timeout": "2s",
    "parts": {
        "user": {"service": "users", "path": "/me", "required": True},
        "cart": {"service": "carts", "path": "/carts/{cookie.session}", "timeout": "500ms"},
        "recs": {"service": "recs", "path": "/top", "allow": ["id", "title", "image"]},
    },
}


@pytest.fixture
def three(backends: Callable[..., Backend]) -> Iterator[dict[str, Backend]]:
    out = {name: backends(name) for name in ("users", "carts", "recs")}
    yield out


def home(bff: Callable[..., str], three: dict[str, Backend], **route: Any) -> str:
    services = {n: instance(n, b.port) for n, b in three.items()}
    return bff([{"path": "/bff/home", "aggregate": HOME, **route}], services)


def test_the_answer_is_exactly_the_parts_json(bff, three):
    user = b'{"id": 7, "name": "Ada", "big": 12345678901234567890, "tags": [], "x": 1.10}'
    cart = b'{"items":[{"sku":"a\\"}"}],"total":3}'
    three["users"].body = user
    three["carts"].body = cart
    three["recs"].body = b'{"id": 1, "title": "T", "image": "i.jpg", "secret": "no"}'
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", cookies={"session": "s-1"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["X-Nginxgen-Complete"] == "true"
    assert "X-Nginxgen-Failed-Parts" not in r.headers
    # Byte for byte: numbers, empty arrays and escapes as the services sent them.
    assert r.text == (
        '{"user":'
        + user.decode()
        + ',"cart":'
        + cart.decode()
        + ',"recs":{"id":1,"title":"T","image":"i.jpg"}}'
    )
    assert three["carts"].requests[-1]["path"] == "/carts/s-1"
    assert three["users"].requests[-1]["path"] == "/me"


def test_credentials_and_request_id_reach_every_part(bff, three):
    url = home(bff, three)
    r = requests.get(
        f"{url}/bff/home",
        headers={"Authorization": "Bearer t0k", "X-Request-ID": "req-42"},
        cookies={"session": "abc"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-ID"] == "req-42"
    for b in three.values():
        seen = b.headers_seen()
        assert seen["authorization"] == "Bearer t0k"
        assert "session=abc" in seen["cookie"]
        assert seen["x-request-id"] == "req-42"
        assert "accept-encoding" not in seen


def test_a_generated_request_id_is_the_same_in_every_part(bff, three):
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", cookies={"session": "abc"}, timeout=10)
    rid = r.headers["X-Request-ID"]
    assert {b.headers_seen()["x-request-id"] for b in three.values()} == {rid}


def test_parts_run_in_parallel(bff, backends):
    barrier = Barrier(3)
    try:
        ports = {n: barrier.start({"part": n}) for n in ("users", "carts", "recs")}
        services = {n: instance(n, p) for n, p in ports.items()}
        agg = {
            "timeout": "20s",
            "parts": {
                "user": {"service": "users", "path": "/me"},
                "cart": {"service": "carts", "path": "/c"},
                "recs": {"service": "recs", "path": "/top"},
            },
        }
        url = bff([{"path": "/bff/home", "aggregate": agg}], services)
        r = requests.get(f"{url}/bff/home", timeout=30)
        # Each backend answered only once all three held a request at the same time.
        assert r.json() == {
            "user": {"part": "users"},
            "cart": {"part": "carts"},
            "recs": {"part": "recs"},
        }
        assert r.headers["X-Nginxgen-Complete"] == "true"
    finally:
        barrier.stop()


def test_an_optional_part_that_times_out_is_null(bff, three):
    three["carts"].delay = 3.0  # its timeout is 500ms
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", cookies={"session": "s"}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["cart"] is None and body["user"]["backend"] == "users"
    assert r.headers["X-Nginxgen-Complete"] == "false"
    assert r.headers["X-Nginxgen-Failed-Parts"] == "cart"


def test_a_failing_optional_part_is_null_and_listed(bff, three):
    three["recs"].status = 500
    three["carts"].body = b"<html>not json</html>"
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", cookies={"session": "s"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["recs"] is None and r.json()["cart"] is None
    assert r.headers["X-Nginxgen-Failed-Parts"] == "cart, recs"


def test_a_failed_required_part_is_a_502_naming_it(bff, three):
    three["users"].status = 503
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", cookies={"session": "s"}, timeout=10)
    assert r.status_code == 502
    assert r.json() == {"error": "required part failed", "part": "user"}
    assert r.headers["X-Nginxgen-Complete"] == "false"
    assert "user" in r.headers["X-Nginxgen-Failed-Parts"]


def test_a_missing_value_leaves_its_part_out(bff, three):
    url = home(bff, three)
    r = requests.get(f"{url}/bff/home", timeout=10)  # no session cookie
    assert r.status_code == 200
    assert r.json()["cart"] is None
    assert r.headers["X-Nginxgen-Failed-Parts"] == "cart"
    assert three["carts"].count == 0


def test_a_required_part_without_its_value_is_the_clients_error(bff, three):
    agg = {"parts": {"user": {"service": "users", "path": "/u/{header.X-User}", "required": True}}}
    url = bff(
        [{"path": "/bff/me", "aggregate": agg}], {"users": instance("users", three["users"].port)}
    )
    r = requests.get(f"{url}/bff/me", timeout=10)
    assert r.status_code == 400
    assert r.json() == {
        "error": "missing or unusable value",
        "part": "user",
        "from": "header.X-User",
        "reason": "missing",
    }
    assert three["users"].count == 0
    ok = requests.get(f"{url}/bff/me", headers={"X-User": "ada"}, timeout=10)
    assert ok.status_code == 200 and three["users"].requests[-1]["path"] == "/u/ada"
    head = requests.head(f"{url}/bff/me", headers={"X-User": "ada"}, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(ok.content)
    post = requests.post(f"{url}/bff/me", headers={"X-User": "ada"}, timeout=10)
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"


def test_deny_drops_fields(bff, three):
    three["users"].body = b'{"id": 1, "password_hash": "x", "name": "A"}'
    agg = {"parts": {"user": {"service": "users", "path": "/me", "deny": ["password_hash"]}}}
    url = bff(
        [{"path": "/bff/me", "aggregate": agg}], {"users": instance("users", three["users"].port)}
    )
    assert requests.get(f"{url}/bff/me", timeout=10).text == '{"user":{"id":1,"name":"A"}}'


def test_auth_and_rate_limits_apply_to_an_aggregate(bff, three, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("key-one-1234\n")
    keys.chmod(0o644)
    services = {n: instance(n, b.port) for n, b in three.items()}
    url = bff(
        [
            {
                "path": "/bff/home",
                "aggregate": HOME,
                "auth": {"api_keys": {"file": str(keys)}},
                "rate_limit": {"rate": "1r/m", "burst": 0},
            }
        ],
        services,
    )
    assert requests.get(f"{url}/bff/home", timeout=10).status_code == 401
    assert sum(b.count for b in three.values()) == 0
    key = {"X-Api-Key": "key-one-1234"}
    ok = requests.get(f"{url}/bff/home", headers=key, cookies={"session": "s"}, timeout=10)
    assert ok.status_code == 200, ok.text
    # The key stays at the gateway: no part sees it.
    assert all("x-api-key" not in b.headers_seen() for b in three.values())
    again = requests.get(f"{url}/bff/home", headers=key, cookies={"session": "s"}, timeout=10)
    assert again.status_code == 429


def test_an_auth_service_guards_the_aggregate_and_its_identity_reaches_every_part(bff, three):
    auth = AuthService({"good": "u-42"})
    try:
        services = {n: instance(n, b.port) for n, b in three.items()}
        agg = {
            "parts": {
                "user": {"service": "users", "path": "/users/{header.X-User-Id}"},
                "recs": {"service": "recs", "path": "/top"},
            }
        }
        route = {
            "path": "/bff/me",
            "aggregate": agg,
            "auth": {"url": auth.url, "forward_headers": ["X-User-Id"]},
        }
        url = bff([route], services)
        assert requests.get(f"{url}/bff/me", timeout=10).status_code == 401
        # A client's own X-User-Id is replaced by the auth service's answer.
        r = requests.get(
            f"{url}/bff/me", headers={"X-Token": "good", "X-User-Id": "admin"}, timeout=10
        )
        assert r.status_code == 200, r.text
        assert len(auth.seen) == 2  # one check per client request, not one per part
        for name in ("users", "recs"):
            assert three[name].headers_seen()["x-user-id"] == "u-42"
        # {header.X-User-Id} is the auth service's answer too, never the client's header.
        assert three["users"].requests[-1]["path"] == "/users/u-42"
    finally:
        auth.stop()


def test_the_redis_cache_keeps_complete_answers_only(bff, three, redis_server):
    srv = redis_server()
    services = {n: instance(n, b.port) for n, b in three.items()}
    agg = {
        "parts": {
            "user": {"service": "users", "path": "/me"},
            "recs": {"service": "recs", "path": "/top"},
        }
    }
    redis = {"host": "127.0.0.1", "port": srv.port}
    url = bff(
        [{"path": "/bff/cached", "aggregate": agg, "cache": {"ttl": "30s"}}],
        services,
        redis=redis,
    )
    first = requests.get(f"{url}/bff/cached", timeout=10)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    second = requests.get(f"{url}/bff/cached", timeout=10)
    assert second.headers["X-Cache"] == "HIT" and second.text == first.text
    assert (three["users"].count, three["recs"].count) == (1, 1)
    # An answer with a failed part says no-store, and the next request asks again.
    three["recs"].status = 500
    partial = requests.get(f"{url}/bff/cached?v=2", timeout=10)
    assert partial.headers["X-Nginxgen-Complete"] == "false"
    assert partial.headers["Cache-Control"] == "no-store"
    requests.get(f"{url}/bff/cached?v=2", timeout=10)
    assert three["users"].count == 3


# --- hostile values in path templates --------------------------------------------------

_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)),
    min_size=0,
    max_size=40,
) | st.sampled_from(["..", ".", "../../admin", "a/../b", "%2e%2e", "%2F", "a?b#c", "a b", "\\x"])


@pytest.fixture
def echo_gateway(bff: Callable[..., str], backends: Callable[..., Backend]) -> tuple[str, Backend]:
    echo = backends("items", echo=True)
    agg = {
        "parts": {
            kind: {"service": "items", "path": f"/items/{kind}/{{{source}}}/x"}
            for kind, source in (
                ("c", "cookie.sid"),
                ("h", "header.X-Item"),
                ("q", "query.id"),
                ("p", "path.3"),
            )
        }
    }
    url = bff([{"path": "/bff/item/", "aggregate": agg}], {"items": instance("items", echo.port)})
    return url, echo


def _safe(value: str) -> bool:
    """What a segment may hold once decoded: not empty, no separator, no dot segment."""
    return value not in ("", ".", "..") and "/" not in value and "\\" not in value


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_TEXT)
def test_hostile_values_never_leave_their_segment(echo_gateway, value):
    """Each value the template reads (cookie, header, query, path) reaches the backend as
    exactly one segment that decodes to it, or its part is not called at all."""
    url, echo = echo_gateway
    raw = value.encode("utf-8")
    before = echo.count
    # The query and the path carry any text; a header and a cookie what HTTP lets them.
    header_ok = all(0x21 <= b < 0x7F for b in raw)
    cookie_ok = header_ok and not any(c in value for c in ';,"')
    headers = {"X-Item": value} if header_ok and value else {}
    if cookie_ok and value:
        headers["Cookie"] = f"sid={value}"
    # nginx resolves dot segments of the request path before any route sees it.
    in_path = quote(value, safe="") if _safe(value) else "plain"
    r = requests.get(
        f"{url}/bff/item/{in_path}?id={quote(value, safe='')}", headers=headers, timeout=10
    )
    assert r.status_code == 200, r.text
    sent = {"c": cookie_ok and value, "h": header_ok and value, "q": value, "p": unquote(in_path)}
    called = set()
    for req in echo.requests[before:]:
        path = req["path"]
        kind, _, rest = path[len("/items/") :].partition("/")
        assert path.startswith("/items/") and rest.endswith("/x"), path
        segment = rest[: -len("/x")]
        # Exactly one segment, and it decodes to the value the client sent.
        assert "/" not in segment and "?" not in segment and "#" not in segment, path
        assert unquote(segment, errors="surrogateescape") == sent[kind], (path, value)
        called.add(kind)
    failed = set(filter(None, r.headers.get("X-Nginxgen-Failed-Parts", "").split(", ")))
    assert called | failed == {"c", "h", "q", "p"} and not called & failed
    for kind, v in sent.items():
        assert (kind in called) == bool(v and _safe(v)), (kind, value)


# --- image_fit --------------------------------------------------------------------------


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def _width(data: bytes) -> int:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size[0]


@pytest.fixture
def images(bff: Callable[..., str], backends: Callable[..., Backend]) -> tuple[str, Backend]:
    pytest.importorskip("PIL")
    require_nginx("lua", "image_filter")
    img = backends("img")
    img.body = _jpeg(2000, 1000)
    img.extra_headers = {"Content-Type": "image/jpeg"}
    route = {
        "path": "/img/",
        "service": "img",
        "image_fit": {"widths": [320, 640, 1280], "from": ["query w", "header Viewport-Width"]},
    }
    return bff([route], {"img": instance("img", img.port)}), img


def test_a_2000_pixel_jpeg_comes_back_640_wide(images):
    url, img = images
    r = requests.get(f"{url}/img/a.jpg?w=640", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    assert _width(r.content) == 640


def test_other_widths_get_the_nearest_allowed_one(images):
    url, _ = images
    for asked, got in (("641", 640), ("100", 320), ("959", 640), ("961", 1280), ("99999", 1280)):
        r = requests.get(f"{url}/img/a.jpg?w={asked}", timeout=10)
        assert _width(r.content) == got, asked
    assert _width(requests.get(f"{url}/img/a.jpg", timeout=10).content) == 1280
    hinted = requests.get(f"{url}/img/a.jpg", headers={"Viewport-Width": "300"}, timeout=10)
    assert _width(hinted.content) == 320
    assert "Viewport-Width" in hinted.headers["Vary"]


def test_originals_are_cached_and_the_width_never_reaches_the_upstream(images):
    url, img = images
    for w in ("320", "640", "641", "1280"):
        assert requests.get(f"{url}/img/b.jpg?w={w}", timeout=10).status_code == 200
    assert img.count == 1
    assert img.requests[0]["path"] == "/img/b.jpg"


def test_a_non_image_passes_untouched(images):
    url, img = images
    img.body = b'{"not": "an image"}'
    img.extra_headers = {"Content-Type": "application/json"}
    r = requests.get(f"{url}/img/c.json?w=640", timeout=10)
    assert r.status_code == 200
    assert r.content == b'{"not": "an image"}'
    img.status = 404
    r = requests.get(f"{url}/img/missing.jpg?w=640", timeout=10)
    assert r.status_code == 404 and r.content == b'{"not": "an image"}'


def test_an_image_larger_than_the_buffer_passes_as_it_came(bff, backends):
    pytest.importorskip("PIL")
    require_nginx("lua", "image_filter")
    from PIL import Image

    # Noise does not compress: a PNG well over the 1m buffer.
    noisy = Image.frombytes("RGB", (800, 800), random.Random(16).randbytes(800 * 800 * 3))
    out = io.BytesIO()
    noisy.save(out, "PNG")
    big = out.getvalue()
    assert len(big) > 1024 * 1024
    img = backends("img")
    img.body = big
    img.extra_headers = {"Content-Type": "image/png"}
    route = {"path": "/img/", "service": "img", "image_fit": {"widths": [320], "buffer": "1m"}}
    url = bff([route], {"img": instance("img", img.port)})
    r = requests.get(f"{url}/img/big.png", timeout=20)
    assert r.status_code == 200 and r.content == big
