"""The documentation holds together: every link and anchor in README.md and docs/*.md
resolves, every docs page is reachable from the README, the repository paths the pages
name exist, and the spec examples they show are specs nginxgen accepts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nginxgen.spec import SpecError, parse_spec

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower-cased, punctuation dropped
    (letters, digits, '_', '-' and spaces stay), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = INLINE_CODE.sub(lambda m: m.group(2), text)
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(page.read_text()):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(page.read_text()):
        # A code span is not a link, but a link's text may be one: drop only the spans
        # outside brackets by blanking their content, which keeps the brackets balanced.
        plain = INLINE_CODE.sub(lambda m: "`" + "x" * len(m.group(2)) + "`", line)
        for m in LINK.finditer(plain):
            yield number, line[m.start(2) : m.end(2)]


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    problems = []
    for number, target in links(page):
        where = f"{page.relative_to(root)}:{number}: {target}"
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if root not in dest.parents:
            problems.append(f"{where}: points outside the repository")
            continue
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: no heading with that anchor in {dest.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_checker_sees_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Title\n\n## The gateway spec (`nginxgen.yaml`)\n\n## Watch: the sidecar\n"
    )
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#the-gateway-spec-nginxgenyaml) [ok](a.md#watch-the-sidecar) [ok](#b)\n"
        "# B\n[bad](a.md#nope) [bad](missing.md) `[not a link](missing.md)`\n"
        "```\n[in code](missing.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "b.md:3: a.md#nope: no heading with that anchor in a.md",
        "b.md:3: missing.md: no such file",
    ]


def test_github_anchor_rules() -> None:
    assert slug("The gateway spec (`nginxgen.yaml`)") == "the-gateway-spec-nginxgenyaml"
    assert slug("`nginxgen watch`: the sidecar") == "nginxgen-watch-the-sidecar"
    assert slug("Where `render -o` writes") == "where-render--o-writes"
    assert slug("Scale: 10,000 services") == "scale-10000-services"
    assert slug("init(config)") == "initconfig"
    assert slug("Rate limits, auth & monitoring") == "rate-limits-auth--monitoring"


def test_every_docs_page_has_a_title_and_is_linked_from_the_readme() -> None:
    readme = {target.partition("#")[0] for _, target in links(REPO / "README.md")}
    for page in PAGES[1:]:
        first = page.read_text().splitlines()[0]
        assert first.startswith("# "), f"{page.name} starts without a title"
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


REPO_PATH = re.compile(
    r"`((?:nginxgen|tests|benchmarks|examples|lua|templates|scripts|docs|\.ci)/[^`\s]*)`"
)


def test_repository_paths_named_in_the_docs_exist() -> None:
    missing = []
    for page in PAGES:
        for number, line in prose_lines(page.read_text()):
            for m in REPO_PATH.finditer(line):
                path = m.group(1).split("::")[0].rstrip(".,;:")
                if not any(REPO.glob(path)) and not (REPO / path).exists():
                    missing.append(f"{page.relative_to(REPO)}:{number}: {path}")
    assert missing == []


SPEC_KEYS = {"registry", "nginx", "defaults", "services", "routes", "redis", "watch"}


def spec_examples(page: Path) -> Iterator[tuple[int, str]]:
    """YAML blocks that are a spec or a part of one (not a file registry or a lint config)."""
    text = page.read_text()
    for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        data = yaml.safe_load(m.group(1))
        if not isinstance(data, dict) or not set(data) <= SPEC_KEYS:
            continue
        services = data.get("services") or {}
        if any(isinstance(v, list) for v in services.values()):
            continue  # a file registry: services → instances
        yield text[: m.start()].count("\n") + 1, m.group(1)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_spec_examples_are_valid_specs(page: Path, tmp_path: Path) -> None:
    """An example a user copies must load: fill in a registry and a route where the
    example shows only its own section, and the files it names."""
    (tmp_path / "services.yaml").write_text("services: {}\n")
    problems = []
    for line, block in spec_examples(page):
        data = yaml.safe_load(block)
        if "registry" not in data:
            block = "registry: {kind: file, path: services.yaml}\n" + block
        if "routes" not in data:
            block += "\nroutes: [{path: /, service: web}]\n"
        for name in re.findall(r"\bfile: ([\w.-]+)", block):
            (tmp_path / name).write_text("an-example-key\n")
        # PEM files must exist when the spec loads; their contents are checked at render.
        for name in re.findall(r"\b(?:ca|client_cert|client_key): ([\w.-]+)", block):
            (tmp_path / name).touch()
        spec = tmp_path / "nginxgen.yaml"
        spec.write_text(block)
        try:
            parse_spec(block, spec)
        except SpecError as exc:
            problems.append(f"{page.name}:{line}: {exc}")
    assert problems == []
