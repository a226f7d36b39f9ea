"""What nginxgen saw over time, handed to the (pure) plan as data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Observed:
    """What nginxgen saw over time, keyed by `catalog.instance_key`.

    first_seen: when nginxgen first saw an instance (used when the registry gives no
      registered_at); instances absent here predate nginxgen's state and count as old.
    returned: when an instance came back to serving after nginxgen saw it out of service
      (starting, draining, down, or pseudo-dead); its ramp starts again from there.
    dead: instance keys the prober holds out of their upstream (pseudo-dead).
    """

    first_seen: Mapping[str, datetime] = field(default_factory=dict)
    returned: Mapping[str, datetime] = field(default_factory=dict)
    dead: frozenset[str] = frozenset()
