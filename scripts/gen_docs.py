#!/usr/bin/env python3
"""Regenerate the docs pages made from code: the command reference (docs/reference/cli.md).

python scripts/gen_docs.py           # rewrite the page
python scripts/gen_docs.py --check   # exit 1 if the committed page is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"


def main() -> int:
    """Write (or with --check, compare) the generated pages; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check; write nothing.")
    args = parser.parse_args()
    from visionops.cli.app import app
    from visionops.cli.reference import render_reference

    page = render_reference(app)
    current = CLI_PAGE.read_text(encoding="utf-8") if CLI_PAGE.exists() else ""
    if args.check:
        if current != page:
            print(f"{CLI_PAGE.relative_to(ROOT)} is stale — run: python scripts/gen_docs.py")
            return 1
        return 0
    CLI_PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {CLI_PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
