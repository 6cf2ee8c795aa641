"""Every shipped recipe has a docs page whose settings table is what the recipe file sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from visionops.config import available_recipes

ROOT = Path(__file__).resolve().parents[2]


def _gen_docs() -> object:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_recipe_has_a_current_page_in_the_nav() -> None:
    pages = _gen_docs().pages()  # type: ignore[attr-defined]
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in available_recipes():
        page = ROOT / "docs" / "recipes" / f"{name}.md"
        assert page.exists(), f"no page for recipe {name} — run: python scripts/gen_docs.py"
        assert page.read_text(encoding="utf-8") == pages[page], (
            f"{page.name} is stale — run: python scripts/gen_docs.py"
        )
        assert f"recipes/{name}.md" in nav


def test_the_recipe_table_shows_a_list_value_whole() -> None:
    page = (ROOT / "docs" / "recipes" / "mvtec.md").read_text(encoding="utf-8")
    assert "| `anomaly.layers` | `[block8, block11]` | `[layer2, layer3]` |" in page
