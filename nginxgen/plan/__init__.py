"""Spec + Catalog + now + observed → Plan. Pure decisions; no I/O, no clock reads.

make.py puts a plan together; service.py plans one service's upstream; warmup.py holds
the ramp's weight math; gateway.py the rate limits, auth and monitoring; cache.py the
Redis cache; memo.py what may be reused from one plan to the next.
"""

from __future__ import annotations

from .make import PlanMemo, make_plan, next_change_at

__all__ = ["PlanMemo", "make_plan", "next_change_at"]
