"""Packaging: what the package imports is what it declares, and the license file matches the metadata."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "bulkconn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"bulkconn"}


def test_every_directly_imported_package_is_declared() -> None:
    """A package imported by bulkconn is a declared dependency, not only a dependency of a dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    distributions = packages_distributions()
    missing = {
        name: distributions.get(name)
        for name in _imported_top_level_names()
        if not {d.lower() for d in distributions.get(name, [name])} & declared
    }
    assert missing == {}


def test_license_file_matches_the_metadata() -> None:
    """`license = "MIT"` comes with the MIT text and the copyright line."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == "MIT"
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the bulkconn authors\n")
