"""services.NAME.split: good blocks load; bad ones are one sentence naming key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.spec import SpecError, load_spec

HEAD = """\
registry: {kind: file, path: services.yaml}
routes:
  - {path: /carts/, service: carts}
services:
  carts:
    split:
"""

GOOD = (
    HEAD
    + """\
      weights: {blue: 90, green: 10}
      sticky: $cookie_session
      rules:
        - {header: X-Canary, equals: "1", to: green}
        - {cookie: canary, matches: "^(always|yes)$", to: green}
        - {query: version, equals: blue, to: blue}
      mirror: {to: green, percent: 5}
      guard: {version: green, max_5xx_percent: 2, window: 30s, min_requests: 50}
"""
)


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "nginxgen.yaml"
    path.write_text(text)
    return load_spec(path)


def test_the_issue_example_loads(tmp_path: Path) -> None:
    split = load(tmp_path, GOOD).services["carts"].split
    assert split is not None
    assert split.weights == {"blue": 90.0, "green": 10.0}
    assert split.versions == ("blue", "green")
    assert [r.source for r in split.rules] == [
        ("header", "X-Canary"),
        ("cookie", "canary"),
        ("query", "version"),
    ]
    assert split.mirror is not None and split.mirror.percent == 5
    assert split.guard is not None and split.guard.window == 30.0
    assert split.version_from == "version"


BAD = [
    ("weights: {blue: 90, green: 20}", "add up to 100, these add up to 110"),
    ("weights: {blue: 90.001, green: 9.999}", "two decimals"),
    ("weights: {blue: -10, green: 110}", "0-100"),
    ('weights: {"bl ue": 100}', "not a valid version name"),
    ("weights: {blue: 100}\n      sticky: cookie_session", "sticky must be one nginx variable"),
    (
        "weights: {blue: 100}\n      rules: [{header: X-C, matches: '^(a', to: blue}]",
        "not a valid regex",
    ),
    (
        "weights: {blue: 100}\n      rules: [{header: X-C, equals: '1', to: green}]",
        "'green' is not one of the weights' versions",
    ),
    (
        "weights: {blue: 100}\n      rules: [{header: X-C, cookie: c, equals: '1', to: blue}]",
        "exactly one of header, cookie or query",
    ),
    (
        "weights: {blue: 100}\n      rules: [{header: X-C, equals: '1', matches: x, to: blue}]",
        "exactly one of equals or matches",
    ),
    ("weights: {blue: 100}\n      mirror: {to: green}", "mirror: 'green' is not one"),
    ("weights: {blue: 100}\n      mirror: {to: blue, percent: 0}", "greater than 0"),
    (
        "weights: {blue: 100}\n      guard: {version: blue, max_5xx_percent: 2, window: 0s}",
        "window must be 1s-1h",
    ),
    ("weights: {blue: 100}\n      bogus: 1", "unknown key"),
]


@pytest.mark.parametrize(("body", "words"), BAD)
def test_bad_split_is_one_sentence_with_key_and_line(tmp_path: Path, body: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        load(tmp_path, HEAD + "      " + body + "\n")
    text = str(err.value)
    assert "services.carts.split" in text, text
    assert "nginxgen.yaml:" in text, text
    assert words in text, text
    assert "\n" not in text.strip(), text
