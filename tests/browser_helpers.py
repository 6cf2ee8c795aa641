"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

Used by the page tests: open a page, evaluate JavaScript, wait on a condition, press keys,
hold or answer the page's requests (the ``Fetch`` domain), take screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """A headless Chromium with one page, driven over ``--remote-debugging-pipe``.

    Args:
        binary: The browser.
        profile: An empty folder for its profile.
        extra_args: More command-line switches (a fake camera, ...).
    """

    def __init__(self, binary: str, profile: Path, extra_args: Sequence[str] = ()) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4.
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)

        def wire() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                *extra_args,
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (to_browser_r, from_browser_w, high_r, high_w):
            os.close(fd)
        self.writer = os.fdopen(to_browser_w, "wb", buffering=0)
        self.reader = os.fdopen(from_browser_r, "rb", buffering=0)
        self.buffer = b""
        self.next_id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = self.reader.read(65536)
            if not chunk:
                raise AssertionError("chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        for _ in range(100_000):
            reply = self._read()
            if "method" in reply and "id" not in reply:
                self.events.append(reply)
                continue
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
        raise AssertionError(f"no reply to {method}")

    def next_event(self, method: str, seconds: float = 60.0) -> dict[str, Any]:
        """The next event called ``method`` (kept or new), waiting up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for index, event in enumerate(self.events):
                if event["method"] == method:
                    del self.events[index]
                    return dict(event["params"])
            # A cheap command whose reply drains whatever events came before it.
            self.call("Runtime.evaluate", expression="0")
            time.sleep(0.02)
        raise AssertionError(f"no {method} event within {seconds:.0f} s")

    def open(self, url: str, ready: str = "!!document.getElementById('drop')") -> None:
        """Open ``url`` in a new page and wait until ``ready`` is true in it."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self.wait_for(f"document.readyState === 'complete' && {ready}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def press(self, key: str, code: str, key_code: int) -> None:
        """Press and release one key in the focused element (Enter: 'Enter', 'Enter', 13)."""
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
                text="\r" if key == "Enter" and kind == "keyDown" else "",
            )

    def screenshot(self, target: Path) -> Path:
        """The page as a PNG file."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        target.write_bytes(base64.b64decode(data["data"]))
        return target

    def close(self) -> None:
        """Close the browser and the pipes."""
        with contextlib.suppress(AssertionError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.writer.close()
        self.reader.close()
