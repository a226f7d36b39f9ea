"""Prove a rendered config is what the Plan says before anything is installed.

parse.py teaches crossplane the Lua directives; round_trip.py compares the parsed tree
with the Plan (gateway.py: the policies and the status server); nginx_check.py runs
`nginx -t`; incremental.py checks only blocks that changed, with a VerifyCache.
"""

from __future__ import annotations

from .findings import Finding, Verdict
from .incremental import VerifyCache, verify_rendered
from .nginx_check import nginx_test
from .round_trip import UPSTREAM_DIRECTIVES, verify

__all__ = [
    "UPSTREAM_DIRECTIVES",
    "Finding",
    "Verdict",
    "VerifyCache",
    "nginx_test",
    "verify",
    "verify_rendered",
]
