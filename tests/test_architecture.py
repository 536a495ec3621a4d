"""The layout of `ops/` (docs/architecture.md) holds: dependencies point one way
and no module is part of an import circle.

The layer rules are import-linter contracts in pyproject.toml; the circle check
works on grimp's graph of every import in the project (the graph import-linter
itself builds), function-level imports included.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def import_circles(*packages: str) -> list[tuple[str, ...]]:
    """Each direct import a -> b for which b also leads back to a, as the
    circle it closes (a, b, ..., a); empty when the graph is acyclic."""
    graph = grimp.build_graph(*packages, cache_dir=None)
    circles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                circles.append((importer, *back))
    return circles


def test_the_layer_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True)
    assert status == 0, "an import breaks a contract: run `lint-imports` to see it"


def test_no_module_of_the_project_is_in_an_import_circle() -> None:
    assert import_circles("ops", "kaireon") == []


def test_the_circle_check_finds_a_circle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check above must be able to fail: a throwaway package where a imports
    # b at module level and b imports a inside a function.
    package = tmp_path / "circular_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circular_pkg import b\n")
    (package / "b.py").write_text(
        textwrap.dedent(
            """
            def late():
                from circular_pkg import a
                return a
            """
        )
    )
    (package / "c.py").write_text("from circular_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "circular_pkg", raising=False)

    circles = import_circles("circular_pkg")

    assert ("circular_pkg.a", "circular_pkg.b", "circular_pkg.a") in circles
    assert not any(circle[0] == "circular_pkg.c" for circle in circles)
