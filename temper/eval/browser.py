"""Check a web page in headless Chromium over the DevTools protocol: errors, sections, images, screenshots.

    check = check_page("report.html", ["summary", "safety"])
    assert check.ok, check.failures()

Chromium (`chromium` on PATH, Debian's package) runs with a fresh profile in a temporary folder, which is
removed, and the browser's whole process group killed, however the check ends. The protocol is spoken with
aiohttp's websocket client: one request id per command, events collected as they come.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from temper.errors import TemperError


class BrowserError(TemperError):
    """Chromium is missing, did not start, or did not answer in time."""


@dataclass(frozen=True)
class SectionCheck:
    is_present: bool
    height: float  # CSS pixels
    num_images: int
    num_svgs: int
    num_empty_svgs: int  # <svg> elements laid out with zero width or height


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)  # console.error/assert and error log entries
    exceptions: list[str] = field(default_factory=list)  # uncaught JavaScript exceptions
    sections: dict[str, SectionCheck] = field(default_factory=dict)
    broken_images: list[str] = field(default_factory=list)  # <img> that did not load (naturalWidth 0)
    external_requests: list[str] = field(default_factory=list)  # requests for anything but file: and data: URLs

    def failures(self) -> list[str]:
        """What is wrong with the page, one line each; empty when it passed."""
        out = [f"console error: {e}" for e in self.console_errors] + [f"exception: {e}" for e in self.exceptions]
        out += [f"broken image: {src}" for src in self.broken_images]
        out += [f"external request: {url}" for url in self.external_requests]
        for sid, s in self.sections.items():
            if not s.is_present:
                out.append(f"section #{sid}: missing")
            elif s.height <= 0:
                out.append(f"section #{sid}: zero height")
            elif s.num_empty_svgs:
                out.append(f"section #{sid}: {s.num_empty_svgs} plot(s) laid out with zero size")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures()


# Evaluated in the page: per section id, whether it is there, its height and its plots; and the broken images.
_INSPECT = """
(ids) => {
  const sections = {};
  for (const id of ids) {
    const el = document.getElementById(id);
    if (!el) { sections[id] = {present: false, height: 0, images: 0, svgs: 0, empty: 0}; continue; }
    const svgs = [...el.querySelectorAll("svg")].filter((s) => !s.parentElement.closest("svg"));
    const empty = svgs.filter((s) => { const r = s.getBoundingClientRect(); return !(r.width > 0 && r.height > 0); });
    sections[id] = {present: true, height: el.getBoundingClientRect().height,
                    images: el.querySelectorAll("img").length, svgs: svgs.length, empty: empty.length};
  }
  const broken = [...document.images].filter((img) => !(img.complete && img.naturalWidth > 0))
                                    .map((img) => img.currentSrc || img.src || img.outerHTML.slice(0, 120));
  return {sections, broken};
}
"""


class _Cdp:
    """One DevTools websocket: `call` sends a command and waits for its answer; events go to `events`."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.waiters: list[tuple[str, asyncio.Future]] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            self.events.append(data)
            for method, fut in self.waiters:
                if method == data.get("method") and not fut.done():
                    fut.set_result(data)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(BrowserError("the browser closed the DevTools connection"))

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        data = await fut
        if "error" in data:
            raise BrowserError(f"{method}: {data['error'].get('message', data['error'])}")
        return data.get("result", {})

    def expect(self, method: str) -> asyncio.Future:
        """A future for the next event `method`; ask before the command that causes it."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((method, fut))
        return fut


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BrowserError("chromium is not installed (no `chromium` on PATH); on Debian: apt-get install chromium")
    return path


async def _launch(profile: Path) -> asyncio.subprocess.Process:
    with (profile / "stderr.log").open("wb") as err:
        return await asyncio.create_subprocess_exec(
            chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
            f"--user-data-dir={profile / 'profile'}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err, start_new_session=True,
            env={**os.environ, "TMPDIR": str(profile)})  # NOTE: its singleton socket folder goes with the profile


async def _devtools_port(proc: asyncio.subprocess.Process, profile: Path, timeout: float) -> str:
    """The port of the `DevTools listening on ws://...` line Chromium writes to stderr."""
    log = profile / "stderr.log"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and proc.returncode is None:
        m = re.search(r"DevTools listening on ws://[^:/\s]+:(\d+)/", log.read_text(errors="replace"))
        if m:
            return m.group(1)
        await asyncio.sleep(0.05)
    tail = log.read_text(errors="replace")[-1000:]
    raise BrowserError(f"chromium did not start its DevTools server within {timeout:.0f} s "
                       f"(exit status {proc.returncode}): {tail}")


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the browser and its helpers (renderer, GPU, zygote): they share the process group we started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _with_page(path: str | Path, width: int, height: int, timeout: float, action):
    """Open `path` in a fresh headless Chromium, wait for its load event, run `action(cdp)`; always clean up."""
    import aiohttp

    url = Path(path).resolve().as_uri()
    profile = Path(tempfile.mkdtemp(prefix="temper-chromium-"))
    proc = None
    try:
        async with asyncio.timeout(timeout):
            proc = await _launch(profile)
            port = await _devtools_port(proc, profile, timeout)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json") as resp:
                    targets = await resp.json(content_type=None)
                page = next((t for t in targets if t.get("type") == "page"), None)
                if page is None:
                    raise BrowserError(f"chromium has no page target: {targets}")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    cdp = _Cdp(ws)
                    try:
                        return await _open(cdp, url, width, height, action)
                    finally:
                        cdp.reader.cancel()
    except TimeoutError:
        raise BrowserError(f"{url}: the browser did not finish within {timeout:.0f} s") from None
    finally:
        if proc is not None:
            _kill(proc)
            await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _open(cdp: _Cdp, url: str, width: int, height: int, action):
    for domain in ("Runtime", "Log", "Page", "Network"):
        await cdp.call(f"{domain}.enable")
    await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
    loaded = cdp.expect("Page.loadEventFired")
    nav = await cdp.call("Page.navigate", url=url)
    if nav.get("errorText"):
        raise BrowserError(f"{url}: {nav['errorText']}")
    await loaded
    return await action(cdp)


def _describe_exception(params: dict) -> str:
    details = params.get("exceptionDetails", {})
    exc = details.get("exception", {})
    return exc.get("description") or details.get("text", "exception")


async def _inspect(cdp: _Cdp, section_ids: list[str]) -> PageCheck:
    await asyncio.sleep(0.2)  # NOTE: lets events of the last tasks after `load` (late errors) arrive
    expression = f"({_INSPECT})({json.dumps(list(section_ids))})"
    found = await cdp.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in found:
        raise BrowserError(f"the page check's script failed: {_describe_exception(found)}")
    value = found["result"]["value"]
    check = PageCheck(broken_images=value["broken"])
    for sid, s in value["sections"].items():
        check.sections[sid] = SectionCheck(s["present"], float(s["height"]), s["images"], s["svgs"], s["empty"])
    for event in cdp.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            check.exceptions.append(_describe_exception(params))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            check.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            check.console_errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')}"
                                        + (f" ({entry['url']})" if entry.get("url") else ""))
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if not request_url.startswith(("file:", "data:", "about:")):
                check.external_requests.append(request_url)
    return check


def check_page(path: str | Path, section_ids: list[str], timeout: float = 60, width: int = 1280) -> PageCheck:
    """Load a page in headless Chromium and report its errors, its sections and its images.

    Args:
        path: an HTML file, opened as a file:// URL.
        section_ids: element ids to look for; each gets its height and its number of <img> and <svg>.
        timeout: seconds for the whole check, browser start included.
    Raises:
        BrowserError: Chromium is missing, did not start, or the page did not load in time.
    """
    return asyncio.run(_with_page(path, width, 900, timeout, lambda cdp: _inspect(cdp, section_ids)))


async def _capture(cdp: _Cdp, width: int, height: int, full_page: bool) -> bytes:
    if full_page:
        metrics = await cdp.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = max(height, int(size["height"] + 0.5))
        await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                       mobile=False)
    shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
    return base64.b64decode(shot["data"])


def screenshot(path: str | Path, out_png: str | Path, width: int = 1280, height: int = 900, full_page: bool = True,
               timeout: float = 60) -> Path:
    """A PNG of the page `width` CSS pixels wide: the first `height` pixels, or all of it with `full_page`."""
    png = asyncio.run(_with_page(path, width, height, timeout, lambda cdp: _capture(cdp, width, height, full_page)))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(png)
    return out_png
