"""docs/architecture.md keeps up with the tree: it names every package and every helper of basics."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "stagewise"


def test_the_architecture_names_every_package_and_every_basic_helper() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    assert [p for p in packages if f"{p}/" not in text] == []
    helpers = [m.stem for m in (PACKAGE / "basics").glob("*.py") if m.stem != "__init__"]
    assert [m for m in helpers if f"`{m}`" not in text] == []


def test_the_readme_points_to_the_architecture() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
