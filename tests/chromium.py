"""Headless Chromium (the distribution's package) driven over the DevTools protocol, with only the standard
library: a minimal WebSocket client, JavaScript evaluation, file inputs set as a user's upload sets them,
and screenshots. For the web page's browser test and its screenshots.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebSocket:
    """A client WebSocket (RFC 6455) for text messages: enough for the DevTools protocol."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the browser closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")

    def send(self, text: str) -> None:
        data = text.encode()
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            out += chunk
        return bytes(out)

    def recv(self) -> str:
        message = bytearray()
        while True:
            b0, b1 = self._exact(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(length)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the connection")
            if opcode in (0x9, 0xA):  # ping / pong: not used by the browser's DevTools server
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Page:
    """One browser tab: ``call`` a DevTools method, ``js`` to evaluate an expression."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, every: float = 0.25):
        """The value of ``expression`` once it is truthy; TimeoutError after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"waited {timeout} s for {expression[:120]}")
            time.sleep(every)

    def navigate(self, url: str, ready: str, timeout: float = 60.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(ready, timeout)

    def set_files(self, selector: str, index: int, path: str | Path | list[Path]) -> None:
        """Put ``path`` (or several, for an input that takes several) in the ``index``-th element matching
        ``selector`` (an ``input type=file``) among those on the shown part of the page, as a user's choice
        in the file dialog does (its change event fires)."""
        shown = (
            f"[...document.querySelectorAll({json.dumps(selector)})]"
            ".filter(e => !e.closest('.block') || e.closest('.block').offsetParent !== null)"
        )
        found = self.call("Runtime.evaluate", expression=f"{shown}[{index}]")["result"]
        if "objectId" not in found:
            raise LookupError(f"no element {selector} number {index} on the page")
        files = [str(p) for p in path] if isinstance(path, list) else [str(path)]
        self.call("DOM.setFileInputFiles", files=files, objectId=found["objectId"])

    def click_at(self, selector: str, fx: float, fy: float) -> None:
        """A mouse click at the fractions ``fx``, ``fy`` of the first shown element matching ``selector``."""
        box = self.js(
            f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})]"
            ".find(e => e.offsetParent !== null); const r = e.getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()"
        )
        x, y = box[0] + fx * box[2], box[1] + fy * box[3]
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@contextlib.contextmanager
def headless_page(width: int = 1280, height: int = 1400) -> Iterator[Page]:
    """A headless Chromium and its first tab; the browser is ended on exit."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed")
    port = free_port()
    # the profile outlives a child process that is still flushing into it only if that child is not ended
    # with the browser (its whole process group is, below); a straggler's file must not fail the test
    with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the browser and all its children end together
        )
        ws = None
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
                        targets = json.load(reply)
                    page = next(t for t in targets if t.get("type") == "page")
                    break
                except (OSError, StopIteration):
                    if time.monotonic() > end or process.poll() is not None:
                        raise RuntimeError("chromium did not start its DevTools server") from None
                    time.sleep(0.2)
            ws = WebSocket(page["webSocketDebuggerUrl"])
            tab = Page(ws)
            tab.call("Page.enable")
            tab.call("DOM.enable")
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            tab.call("Emulation.setDeviceMetricsOverride", **metrics)
            yield tab
        finally:
            if ws is not None:
                ws.close()
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children left behind by the browser
