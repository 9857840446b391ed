"""Headless Chromium driven over the Chrome DevTools Protocol on a pipe.

``--remote-debugging-pipe`` needs no driver binary, no port and no Python package:
Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events
on fd 4. Events are recorded per page, which is how the tests see every request the
page made and every script V8 compiled for it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.waiting import until_blocking

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
TIMEOUT = 20.0


class CDPError(RuntimeError):
    pass


@dataclass
class PageLoad:
    """What happened while one page loaded."""

    url: str
    requests: list[str] = field(default_factory=list)
    scripts: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


class Chromium:
    def __init__(self, executable: str, user_data_dir: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def give_chrome_fds_3_and_4() -> None:  # runs in the child before exec
            reads = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            writes = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=give_chrome_fds_3_and_4,  # the reader thread starts only after this
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.version = self.call("Browser.getVersion")["product"]

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._lock:
                    if "id" in message and message["id"] in self._replies:
                        self._replies[message["id"]].put(message)
                    elif "method" in message:
                        self._events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            reply: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[message_id] = reply
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=TIMEOUT)
        except queue.Empty:
            raise CDPError(f"{method}: no answer from Chromium within {TIMEOUT}s") from None
        finally:
            with self._lock:
                del self._replies[message_id]
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def events(self, session: str, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e for e in self._events if e.get("sessionId") == session and (method is None or e["method"] == method)
            ]

    def forget_events(self, session: str) -> None:
        with self._lock:
            self._events = [e for e in self._events if e.get("sessionId") != session]

    def wait_for(self, session: str, method: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        found = until_blocking(lambda: self.events(session, method), timeout, method, every=0.01, error=CDPError)
        return found[-1]

    @contextmanager
    def page(self, width: int, height: int = 900) -> Iterator[Page]:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        try:
            for domain in ("Page", "Network", "Debugger", "Runtime"):
                self.call(f"{domain}.enable", session=session)
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 1,
                    "mobile": width < 600,
                },
                session=session,
            )
            yield Page(self, session, width)
        finally:
            self.call("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        with suppress(CDPError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            with suppress(OSError):
                os.close(fd)


class Page:
    def __init__(self, browser: Chromium, session: str, width: int) -> None:
        self.browser = browser
        self.session = session
        self.width = width

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.call(method, params, self.session)

    def load(self, url: str, settle: float = 0.3) -> PageLoad:
        """Open ``url`` and record what the page did until it was loaded and quiet.

        The record is taken before the test evaluates anything itself, so every
        script in it is one the page brought along."""
        self.browser.forget_events(self.session)
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation failed: {result['errorText']}")
        self.browser.wait_for(self.session, "Page.loadEventFired")
        time.sleep(settle)
        load = PageLoad(url=url)
        for event in self.browser.events(self.session):
            params = event["params"]
            if event["method"] == "Network.requestWillBeSent":
                load.requests.append(params["request"]["url"])
            elif event["method"] == "Debugger.scriptParsed":
                load.scripts.append({"url": params.get("url", ""), "id": params["scriptId"]})
            elif event["method"] == "Runtime.consoleAPICalled":
                load.console.append(params.get("type", ""))
        return load

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CDPError(f"evaluation failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
