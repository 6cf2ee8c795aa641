#!/usr/bin/env python3
"""Regenerate the docs made from code: the command reference and each recipe's settings.

docs/reference/cli.md is rendered from the Typer app; docs/recipes/<name>.md gets its
generated block (the recipe's settings, as `visionops recipes show` prints them) for every
shipped recipe, a new page when there is none.

python scripts/gen_docs.py           # rewrite the pages
python scripts/gen_docs.py --check   # exit 1 if a committed page is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"
RECIPES = ROOT / "docs" / "recipes"


def pages() -> dict[Path, str]:
    """Every generated page and what it should hold."""
    from visionops.cli.app import app
    from visionops.cli.reference import render_recipe_page, render_reference
    from visionops.config import available_recipes

    wanted = {CLI_PAGE: render_reference(app)}
    for name in available_recipes():
        page = RECIPES / f"{name}.md"
        current = page.read_text(encoding="utf-8") if page.exists() else None
        wanted[page] = render_recipe_page(name, current)
    return wanted


def main() -> int:
    """Write (or with --check, compare) the generated pages; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check; write nothing.")
    args = parser.parse_args()
    stale = 0
    for path, page in pages().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == page:
            continue
        if args.check:
            print(f"{path.relative_to(ROOT)} is stale — run: python scripts/gen_docs.py")
            stale = 1
        else:
            path.write_text(page, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
