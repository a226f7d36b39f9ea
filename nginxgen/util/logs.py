"""Log lines with structured fields: one message for people, `fields` for JSON lines.

The formatters (watch/telemetry.py) print the record's `fields` as key=value or as JSON.
"""

from __future__ import annotations

import logging
from typing import Any


def event(log: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})
