"""Running the ``visionops`` entry point in-process, as a user's shell would."""

from __future__ import annotations

import sys

import pytest

from visionops.cli.app import main


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run ``visionops ARGS`` through ``main()``; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["visionops", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 0), captured.out, captured.err
