"""``python -m visionops``."""

from visionops.cli.app import main

main()
