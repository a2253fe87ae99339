"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

Standard library only: Chromium reads JSON commands on fd 3 and writes replies and
events on fd 4, each terminated by a NUL byte. No WebDriver, no websocket client,
no driver version to match: Debian's ``chromium`` package is all it needs.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--window-size=1280,900",
    "--remote-debugging-pipe",
]


class BrowserError(RuntimeError):
    pass


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """One headless browser with one page; every wait has a deadline."""

    def __init__(self, user_data_dir: Path, binary: Path = CHROMIUM) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Move the child's ends above 9, so redirecting them to 3 and 4 cannot clobber one another.
        to_browser_r, from_browser_w = (_above_9(to_browser_r), _above_9(from_browser_w))
        args = [str(binary), *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]
        # The shell wires the two pipe ends to the fd numbers Chromium expects, then becomes Chromium.
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *args],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session: str | None = None

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as f:
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                with self._cond:
                    for raw in messages:
                        msg = json.loads(raw)
                        if "id" in msg:
                            self._replies[msg["id"]] = msg
                        else:
                            self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 30.0, session: bool = True
    ) -> dict[str, Any]:
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._replies or not self._reader.is_alive(), timeout):
                raise BrowserError(f"no reply to {method} within {timeout}s")
            if ident not in self._replies:
                raise BrowserError(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` in a new page and wait for its load event."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        self.send("Page.enable")
        with self._cond:
            seen = len(self.events)
        self.send("Page.navigate", {"url": url})
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events[seen:]), timeout
            )
        if not ok:
            raise BrowserError(f"{url} did not load within {timeout}s")

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout=timeout + 5,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, predicate: str, timeout: float = 20.0) -> bool:
        """Wait in the page until the JS expression ``predicate`` is truthy: re-checked on every DOM change."""
        script = f"""new Promise((resolve) => {{
            const check = () => {{ try {{ return !!({predicate}); }} catch (e) {{ return false; }} }};
            if (check()) return resolve(true);
            const done = () => {{ obs.disconnect(); clearTimeout(t); resolve(true); }};
            const obs = new MutationObserver(() => {{ if (check()) done(); }});
            obs.observe(document, {{subtree: true, childList: true, attributes: true, characterData: true}});
            const t = setTimeout(() => {{ obs.disconnect(); resolve(check()); }}, {int(timeout * 1000)});
        }})"""
        return bool(self.evaluate(script, timeout=timeout))

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self._to_browser)
        except OSError:
            pass
