"""docs/architecture.md is the map of ops/: every module is on it."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def test_every_module_of_ops_is_on_the_architecture_map():
    base = Path(settings.BASE_DIR)
    text = (base / "docs" / "architecture.md").read_text()
    modules = [
        path
        for path in (base / "ops").rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    ]
    assert len(modules) > 50  # the walk found the package
    missing = [
        str(path.relative_to(base))
        for path in modules
        # Named as `name`, `name (...)`, or by its file name.
        if f"`{path.stem}`" not in text
        and f"`{path.stem} " not in text
        and f"{path.stem}.py" not in text
    ]
    assert missing == []


def test_product_text_does_not_send_people_to_the_runbook():
    """Pages and docs stand on their own: the docs may name "the original
    operations runbook" only as the source of a figure they also explain."""
    import re

    base = Path(settings.BASE_DIR)
    for path in (base / "templates").rglob("*.html"):
        text = re.sub(
            r"{% comment %}.*?{% endcomment %}", "", path.read_text(), flags=re.S
        )
        assert "runbook" not in text.lower(), path
    for path in [base / "README.md", *(base / "docs").glob("*.md")]:
        text = path.read_text().lower().replace("original operations runbook", "")
        assert "runbook" not in text, path
