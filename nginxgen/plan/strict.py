"""What `render --strict` refuses: a config that renders, but not the one the spec meant.

Each is served safely without --strict (a 503 route, an unused override, an instance
left out), which is right for a sidecar and wrong for a CI gate that should notice.
"""

from __future__ import annotations

from ..model.catalog import Catalog
from ..model.plan import Plan
from ..spec import Spec


def strict_problems(spec: Spec, catalog: Catalog, plan: Plan) -> list[str]:
    """One sentence per problem, in spec order, then the registry's dropped entries."""
    problems = [
        f"a route goes to service {name!r}, which is not in the registry"
        for name in spec.service_names
        if name not in catalog.services
    ]
    problems += [
        f"services.{name}: settings for a service that is not in the registry"
        for name in spec.services
        if name not in catalog.services
    ]
    problems += [f"dropped registry entry: {line}" for line in plan.dropped]
    return problems
