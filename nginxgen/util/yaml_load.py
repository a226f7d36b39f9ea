"""Every YAML document nginxgen reads (spec, file registry, lint config) is loaded here.

One loader for all of them, because each rule below was missing somewhere once:

- safe construction only, on PyYAML's C parser when it is built (the pure-Python
  parser takes seconds on a 10,000-service registry);
- aliases may not expand beyond `MAX_ALIAS_NODES` nodes: a 1 KB "billion laughs" file is
  cheap to parse (aliases share nodes) but every walk over the result — validation,
  repr, a dump — visits each copy, for minutes and gigabytes;
- no recursive aliases and no nesting deeper than `MAX_DEPTH`, so no walk hits Python's
  recursion limit;
- a scalar that YAML 1.1 calls an int, float or timestamp but Python cannot build
  (a 5,000-digit integer, 2020-13-45) stays the text it was written as, so the caller
  refuses that one value with its own message instead of the whole document failing;
- errors name the file and line and never quote a whole value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from .heap import without_collector

try:  # the C parser: same results, ~10x faster
    from yaml import CSafeLoader as _Base
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Base  # type: ignore[assignment]

# Nodes that aliases may add beyond the document's own: this many, or ALIAS_RATIO times
# the document's own nodes when that is more (a generated registry that shares one `meta`
# mapping among 50,000 instances). Real anchors and merge keys stay far below; a 1 KB
# bomb asks for 387 million.
MAX_ALIAS_NODES = 100_000
ALIAS_RATIO = 10
MAX_DEPTH = 1000  # libyaml's own limit for the written nesting; aliases can nest deeper
_PROBLEM_CHARS = 200


class YamlError(ValueError):
    """A document that cannot be loaded: where (file[:line]) and what, one line."""

    def __init__(self, where: str, problem: str, line: int | None = None) -> None:
        self.where, self.line = where, line
        self.problem = _cut(problem)
        super().__init__(f"{where}{f':{line}' if line else ''}: {self.problem}")


class SafeLoader(_Base):
    """PyYAML's safe loader (C parser when available) with lenient number and time scalars."""


def _lenient(construct: Callable[[Any, yaml.ScalarNode], Any]) -> Callable[..., Any]:
    def lenient(loader: Any, node: yaml.ScalarNode) -> Any:
        try:
            return construct(loader, node)
        # "month must be in 1..12", > 4300 digits, an offset of 00:00:00.000001 that the
        # resolver takes for a time and the constructor's pattern does not (AttributeError)
        except (ValueError, ArithmeticError, AttributeError, TypeError):
            return loader.construct_scalar(node)

    return lenient


for _tag in ("int", "float", "timestamp"):
    _name = f"tag:yaml.org,2002:{_tag}"
    SafeLoader.add_constructor(_name, _lenient(_Base.yaml_constructors[_name]))


@dataclass(frozen=True)
class Document:
    data: Any  # None for an empty document
    node: yaml.Node | None  # the composed node tree, for callers that report lines


@without_collector  # a 10,000-service registry: half the time (heap.py says why)
def load_yaml(text: str | bytes, where: str, loader: type[SafeLoader] = SafeLoader) -> Document:
    """Parse one YAML (or JSON) document. Raises YamlError naming `where` and the line."""
    try:
        parser = loader(text)
        try:
            node = parser.get_single_node()
            if node is None:
                return Document(None, None)
            if _may_alias(text):
                check_expansion(node, where)
            return Document(parser.construct_document(node), node)
        finally:
            parser.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark else None
        raise YamlError(where, f"not valid YAML: {problem}", line) from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise YamlError(where, f"nested too deeply (the limit is {MAX_DEPTH} levels)") from None


def load_data(raw: str | bytes, where: str) -> Any:
    """The data of a file that may be JSON or YAML (the file registry): JSON by the JSON
    parser, the rest as YAML. YAML 1.1 reads most JSON, but not the surrogate pairs
    (\\ud83d\\ude00) json.dumps writes for a character beyond the BMP: one emoji in one
    tag failed the whole file."""
    if raw.lstrip()[:1] in ("{", "[", b"{", b"["):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            pass  # YAML in flow style, or broken: the YAML parser says where
    return load_yaml(raw, where).data


def _may_alias(text: str | bytes) -> bool:
    """Whether the text can hold an alias: a '*' where a token starts (after a line start,
    blank, '[', '{' or ','). Not in a quoted '*.conf'. A 10,000-service file has none, so
    the walk over its 400,000 nodes (about half the parse time again) is skipped."""
    if isinstance(text, str):
        return _ALIAS.search(text) is not None
    return _ALIAS_BYTES.search(text) is not None


_ALIAS = re.compile(r"(?:^|[\s\[{,])\*", re.MULTILINE)
_ALIAS_BYTES = re.compile(rb"(?:^|[\s\[{,])\*", re.MULTILINE)


def check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a node graph whose aliases expand too far, that loops, or nests too deep.

    Aliases make the composed tree a graph that shares nodes. One post-order pass over
    the distinct nodes computes the size each would have expanded (plain integers, so a
    bomb costs nothing here) and the depth of the expanded tree.
    """
    size: dict[int, int] = {}  # id(node) -> expanded size of its subtree
    on_path: set[int] = set()  # the nodes being visited: their ancestors, for loops
    biggest: tuple[int, yaml.Node] = (0, root)  # largest subtree reached through an alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:  # reached again: an alias
            if size[key] > biggest[0]:
                biggest = (size[key], node)
            continue
        if key in on_path:
            raise YamlError(where, "an alias refers to its own anchor", _line(node))
        if len(on_path) >= MAX_DEPTH:
            raise YamlError(
                where, f"nested too deeply (the limit is {MAX_DEPTH} levels)", _line(node)
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))
    extra = size[id(root)] - len(size)
    limit = max(MAX_ALIAS_NODES, ALIAS_RATIO * len(size))
    if extra > limit:
        raise YamlError(
            where,
            f"aliases expand to more than {limit:,} nodes ({extra:,}); refused — write the "
            "values out, or use fewer aliases to large collections",
            _line(biggest[1]),
        )


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _cut(text: str, limit: int = _PROBLEM_CHARS) -> str:
    text = " ".join(text.split())  # PyYAML's problems span lines
    return text if len(text) <= limit else text[: limit - 3] + "..."
