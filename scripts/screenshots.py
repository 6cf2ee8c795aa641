#!/usr/bin/env python3
"""Make the docs' screenshots with headless Chromium, from a real tiny run (never by hand).

    python scripts/screenshots.py     # docs/images/{upload-page,eval-report,drift-report}.png

In a temporary folder: ``visionops quickstart`` on the shapes demo (train, eval, export, a
served check that logs predictions), ``visionops drift report`` on that log, then Chromium
photographs the served upload page, the eval report and the drift report. Needs Debian's
``chromium`` (``apt-get install chromium``); the drift screenshot needs the ``drift`` command.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
# A run that learned (test accuracy ≈ 1.0 on the demo, as the test suite's trained fixture):
# a screenshot of a model at chance would show readers a report of nothing.
TINY = [
    "--device",
    "cpu",
    "--epochs",
    "12",
    "data.image_size=64",
    "train.batch_size=32",
    "model.name=resnet18",
    "train.augment.rotate_degrees=180",  # shapes look the same at any angle
    "train.augment.vflip=0.5",
]


def visionops(project: Path, *args: str) -> None:
    """Run a visionops command in ``project``; stop with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "visionops", *args],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"visionops {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def screenshot(browser: str, url: str, target: Path, size: str = "1200,900") -> None:
    """Photograph ``url`` into ``target`` with headless Chromium."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                "--virtual-time-budget=3000",
                f"--screenshot={target}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {target.relative_to(ROOT)}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    """Make every screenshot; return the exit code."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed — apt-get install chromium")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        visionops(project, "quickstart", *TINY)
        run = (project / "runs" / "latest").resolve()
        screenshot(browser, (run / "eval" / "report.html").as_uri(), IMAGES / "eval-report.png")

        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "visionops", "serve", "--port", str(port)],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                        break
                except OSError:
                    time.sleep(0.2)
            screenshot(browser, f"http://127.0.0.1:{port}/", IMAGES / "upload-page.png")
        finally:
            server.terminate()
            server.wait(timeout=60)

        drift = subprocess.run(
            [sys.executable, "-m", "visionops", "drift", "report"],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        reports = sorted(run.rglob("drift*/**/report.html")) or sorted(project.rglob("report.html"))
        reports = [path for path in reports if "eval" not in path.parts]
        if drift.returncode in (0, 1) and reports:
            screenshot(browser, reports[-1].as_uri(), IMAGES / "drift-report.png")
        else:
            print(f"no drift report to photograph (exit {drift.returncode}): {drift.stderr[-300:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
