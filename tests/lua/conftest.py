"""Fixtures of the Lua tests: the shared ones, with backends that answer without delay."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Backend
from tests.lua.harness import no_nagle


@pytest.fixture
def backends(backends: Callable[..., Backend]) -> Callable[..., Backend]:
    """tests/conftest.py's factory; its backends write headers and body apart, which
    Nagle's algorithm and the peer's delayed ACK turn into 40 ms per request. Thousands of
    requests through the balancer need them without that wait."""

    def start(name: str, port: int | None = None) -> Backend:
        return no_nagle(backends(name, port))

    return start
