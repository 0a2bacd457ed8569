"""docs/guarantees.md and SECURITY.md name only tests that exist, and promise nothing still marked TODO."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "guarantees.md", ROOT / "SECURITY.md"]
# `tests/FILE.py::NAME`, and `::NAME` right after it in the same cell (same file)
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def _references(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    current = ""
    for match in REFERENCE.finditer(text):
        file, name, continued = match.groups()
        current = file or current
        if name or continued:
            found.append((current, name or continued))
        elif file:
            found.append((file, ""))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_test_exists_and_nothing_is_todo(doc: Path) -> None:
    """Each `tests/...::name` in the doc is a test function of that file; the doc has no TODO left."""
    text = doc.read_text()
    assert "TODO" not in text
    references = _references(text)
    assert references or doc.name == "SECURITY.md"
    for file, name in references:
        source = (ROOT / file).read_text()
        assert not name or re.search(rf"^(async )?def {name}\(", source, re.M), f"{doc.name}: {file}::{name}"
