"""The lint rules: a registry of stable ids, one module per topic, each rule's id, text
and check side by side.

upstreams.py, proxying.py, caching.py, lua.py, generated.py and suppressions.py hold the
rules of their topic and the checks the walk runs for them. Three rules are checked by the
engine itself, and are defined where their check is: NGX000 (the parse, lint/parse.py),
NGX018 (the walk, lint/tree.py), NGX019 (`nginx -t`, lint/external.py).

Ids never change meaning and are never reused; a retired rule keeps its number. Checks
run on the directive they look at, so the whole rule set costs one pass over the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..external import NGINX_TEST
from ..findings import Rule
from ..parse import SYNTAX
from ..tree import UNKNOWN_DIRECTIVE, Checks
from . import caching, generated, lua, proxying, suppressions, upstreams

TOPICS = (upstreams, proxying, caching, lua, generated)

RULES: Mapping[str, Rule] = MappingProxyType(
    {
        r.id: r
        for r in sorted(
            (
                SYNTAX,
                UNKNOWN_DIRECTIVE,
                NGINX_TEST,
                *suppressions.RULES,
                *(r for topic in TOPICS for r in topic.RULES),
            ),
            key=lambda r: r.id,
        )
    }
)
CHECKS = Checks.merge(topic.CHECKS for topic in TOPICS)
_BY_NAME: Mapping[str, str] = MappingProxyType({r.name: r.id for r in RULES.values()})


def canonical(rule: str) -> str | None:
    """A rule id from an id or a name ('NGX010', 'ngx010', 'proxy-timeouts-missing')."""
    if rule in RULES or rule.startswith("gixy/"):
        return rule
    if rule.upper() in RULES:
        return rule.upper()
    return _BY_NAME.get(rule.lower())


__all__ = ["CHECKS", "RULES", "canonical"]
