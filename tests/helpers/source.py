"""A registry in memory for the watch loop's tests, on the clock the test gives it.

`set(*ports)` publishes a new version of service `app` at once; `at(t, *ports)` publishes
it when the clock reaches `t`, so a storm of registry events is a list, not a thread that
sleeps. `wait` returns at the first change within its timeout, moving a FakeClock exactly
there; on the real clock it polls every 5 ms.
"""

from __future__ import annotations

import threading

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.sources import RegistryError
from nginxgen.util.clock import Clock

POLL = 0.005


class FakeSource:
    def __init__(self, *ports: int, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.version = 0
        self.ports = ports
        self.broken = False
        self.reads = 0
        self.schedule: list[tuple[float, tuple[int, ...]]] = []  # (clock time, ports), sorted
        self.lock = threading.Lock()

    def set(self, *ports: int) -> None:
        with self.lock:
            self.ports, self.version = ports, self.version + 1

    def at(self, when: float, *ports: int) -> None:
        """Publish `ports` when the clock reaches `when`."""
        with self.lock:
            self.schedule.append((when, ports))
            self.schedule.sort(key=lambda change: change[0])

    def _publish_due(self) -> None:
        now = self.clock.monotonic()
        with self.lock:
            while self.schedule and self.schedule[0][0] <= now:
                _, self.ports = self.schedule.pop(0)
                self.version += 1

    def read(self) -> Catalog:
        if self.broken:
            raise RegistryError("fake registry: connection refused")
        self._publish_due()
        with self.lock:
            self.reads += 1
            insts = tuple(Instance(f"i{p}", "app", "127.0.0.1", p) for p in self.ports)
            return Catalog({"app": insts}, version=str(self.version))

    def wait(self, version: str, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        while True:
            self._publish_due()
            if str(self.version) != version:
                return True
            now = self.clock.monotonic()
            if now >= deadline:
                return False
            with self.lock:
                upcoming = self.schedule[0][0] if self.schedule else None
            if upcoming is not None:
                self.clock.sleep(min(deadline, upcoming) - now)
            else:
                self.clock.sleep(min(POLL, deadline - now))

    def close(self) -> None:
        pass
