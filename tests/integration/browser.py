"""A small Playwright harness around ComfyUI's web frontend, for the browser integration tests.

It drives a system Chromium (nothing is downloaded): ``EVERANIMATE_CHROMIUM`` names the executable,
else ``chromium`` / ``chromium-browser`` on PATH. Everything happens through the page's own objects
(``window.app``, ``window.LiteGraph``) and through DOM events a user would cause (a file drop on the
canvas, clicks), so a test sees what a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str | None:
    """The Chromium to drive: $EVERANIMATE_CHROMIUM, else the first chromium on PATH."""
    env = os.environ.get("EVERANIMATE_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def launch_browser(executable: str) -> Iterator[Any]:
    """A headless Chromium through playwright.sync_api (closed on exit)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# Page-side helpers, installed once per page as window.__ea.
_HELPERS_JS = r"""
() => {
  if (window.__ea) return;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  window.__ea = {
    sleep,
    ready() {
      const app = window.app, LG = window.LiteGraph;
      return !!(app && app.graph && app.canvas && app.extensionManager && LG &&
                LG.registered_node_types && LG.registered_node_types['EverAnimateLongAnimation']);
    },
    async drop(name, text) {
      const canvas = document.getElementById('graph-canvas');
      if (!canvas) throw new Error('no #graph-canvas');
      const file = new File([text], name, { type: 'application/json' });
      const dt = new DataTransfer();
      dt.items.add(file);
      const r = canvas.getBoundingClientRect();
      const at = { clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 };
      for (const type of ['dragenter', 'dragover', 'drop']) {
        canvas.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, composed: true, dataTransfer: dt, ...at }));
        await sleep(50);
      }
    },
    nodes() {
      return window.app.graph._nodes.map((n) => {
        let box = null;
        try {
          const b = n.getBounding ? n.getBounding(new Float32Array(4)) : null;
          if (b) box = Array.from(b);
        } catch (e) { box = null; }
        const titleH = (n.constructor && n.constructor.title_mode === window.LiteGraph.NO_TITLE) ? 0 : window.LiteGraph.NODE_TITLE_HEIGHT;
        return {
          id: n.id, type: n.type, title: n.title,
          pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]], titleH, box,
          collapsed: !!(n.flags && n.flags.collapsed), mode: n.mode,
          // widgets the workflow file saves (previews have serialize === false)
          widgets: (n.widgets || []).filter((w) => w.serialize !== false)
                     .map((w) => [w.name, (w.value === undefined ? null : w.value)]),
          previews: (n.widgets || []).filter((w) => w.serialize === false).map((w) => w.name),
          properties: JSON.parse(JSON.stringify(n.properties || {})),
        };
      });
    },
    async prompt() {
      const p = await window.app.graphToPrompt();
      return JSON.parse(JSON.stringify(p.output));
    },
  };
}
"""


class ComfyPage:
    """One browser tab on a ComfyUI server; collects console and page errors as they come."""

    def __init__(self, browser: Any, url: str, viewport=(1600, 1000)):
        self.url = url
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.console: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("response", self._on_response)
        self.page.on("requestfailed", lambda req: self.errors.append(f"requestfailed: {req.url} {req.failure}"))

    def _on_console(self, msg) -> None:
        line = f"console.{msg.type}: {msg.text}"
        try:
            where = (msg.location or {}).get("url")
        except Exception:
            where = None
        if where:
            line += f" @ {where}"
        self.console.append(line)
        if msg.type == "error":
            self.errors.append(line)

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self.errors.append(f"http {response.status}: {response.request.method} {response.url}")

    def mark(self) -> int:
        """Index into ``errors``: ``errors_since(mark)`` gives what came after this moment."""
        return len(self.errors)

    def errors_since(self, mark: int) -> list[str]:
        return self.errors[mark:]

    def close(self) -> None:
        self.context.close()

    # -- loading ------------------------------------------------------------------------------
    def open(self, timeout: float = 120) -> None:
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=timeout * 1000)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        end = time.time() + timeout
        while time.time() < end:
            try:
                self.page.evaluate(_HELPERS_JS)
                if self.page.evaluate("() => window.__ea.ready()"):
                    return
            except Exception:
                pass  # navigation still under way
            time.sleep(0.5)
        raise TimeoutError(f"the frontend did not get ready in {timeout} s; errors: {self.errors[-10:]}")

    def js(self, expression: str, arg: Any = None) -> Any:
        """Evaluate a JS function expression ``(arg) => ...`` in the page (helpers in window.__ea)."""
        self.page.evaluate(_HELPERS_JS)
        return self.page.evaluate(expression, arg)

    def frontend_version(self) -> str:
        return str(self.js("() => window.__COMFYUI_FRONTEND_VERSION__ || ''"))

    def drop_workflow(self, path: Path, settle: float = 1.5, timeout: float = 30) -> bool:
        """Drop a workflow file on the canvas as a user does (dragenter, dragover, drop); wait until
        the page's graph holds the file's nodes (ids and types). False when it never did."""
        # ids compared as strings: 1.58.1 gives the nodes of a dropped file string ids ("1")
        wanted = sorted([str(n["id"]), n["type"]] for n in json.loads(path.read_text()).get("nodes", []))
        self.js("async ([name, text]) => { await window.__ea.drop(name, text); }", [path.name, path.read_text()])
        end = time.time() + timeout
        loaded = False
        while time.time() < end:
            got = self.js("() => window.app.graph._nodes.map((n) => [String(n.id), n.type])")
            if sorted(got) == wanted:
                loaded = True
                break
            time.sleep(0.2)
        time.sleep(settle)  # widget callbacks, previews, dialogs
        return loaded

    # -- reading the graph ----------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        return self.js("() => window.__ea.nodes()")

    def prompt(self) -> dict:
        """The prompt the frontend would send: (await app.graphToPrompt()).output."""
        return self.js("async () => await window.__ea.prompt()")

    def dialogs_text(self) -> list[str]:
        """Text of the visible dialogs (PrimeVue / reka dialogs, role=dialog)."""
        return self.js(
            """() => Array.from(document.querySelectorAll('[role=dialog], .p-dialog'))
                 .filter((d) => d.offsetParent !== null || d.getClientRects().length)
                 .map((d) => d.innerText)"""
        )

    # -- view --------------------------------------------------------------------------------
    def fit_view(self) -> None:
        self.js(
            """async () => {
              const app = window.app;
              let done = false;
              try {
                const cmd = app.extensionManager && app.extensionManager.command;
                if (cmd && cmd.execute) { await cmd.execute('Comfy.Canvas.FitView'); done = true; }
              } catch (e) { done = false; }
              if (!done) {
                const ds = app.canvas.ds;
                if (ds.fitToBounds && app.graph._nodes.length) {
                  const b = [Infinity, Infinity, -Infinity, -Infinity];
                  for (const n of app.graph._nodes) {
                    b[0] = Math.min(b[0], n.pos[0]); b[1] = Math.min(b[1], n.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT);
                    b[2] = Math.max(b[2], n.pos[0] + n.size[0]); b[3] = Math.max(b[3], n.pos[1] + n.size[1]);
                  }
                  ds.fitToBounds([b[0], b[1], b[2] - b[0], b[3] - b[1]]);
                }
              }
              app.canvas.setDirty(true, true);
              app.canvas.draw(true, true);
            }"""
        )
        time.sleep(0.5)

    def screenshot_canvas(self, path: Path) -> None:
        """The graph as the user sees it after Fit View, cropped to its nodes and groups (no menus,
        no minimap): what the template thumbnails are made from."""
        path.parent.mkdir(parents=True, exist_ok=True)
        box = self.js(
            """() => {
              const app = window.app, ds = app.canvas.ds, th = window.LiteGraph.NODE_TITLE_HEIGHT;
              const b = [Infinity, Infinity, -Infinity, -Infinity];
              const grow = (x, y, w, h) => { b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y); b[2] = Math.max(b[2], x + w); b[3] = Math.max(b[3], y + h); };
              for (const n of app.graph._nodes) grow(n.pos[0], n.pos[1] - th, n.size[0], n.size[1] + th);
              for (const g of app.graph._groups || []) grow(...g._bounding ? Array.from(g._bounding) : g.bounding);
              const r = app.canvas.canvas.getBoundingClientRect();
              const x0 = Math.max(r.left, r.left + (b[0] + ds.offset[0]) * ds.scale - 8);
              const y0 = Math.max(r.top, r.top + (b[1] + ds.offset[1]) * ds.scale - 8);
              const x1 = Math.min(r.right, r.left + (b[2] + ds.offset[0]) * ds.scale + 8);
              const y1 = Math.min(r.bottom, r.top + (b[3] + ds.offset[1]) * ds.scale + 8);
              return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
            }"""
        )
        if box["width"] > 50 and box["height"] > 50:
            self.page.screenshot(path=str(path), clip=box)
        else:
            self.page.locator("#graph-canvas").screenshot(path=str(path))

    # -- running -------------------------------------------------------------------------------
    def queue(self) -> None:
        """Queue the graph the way the Run button does."""
        self.js("async () => { await window.app.queuePrompt(0, 1); }")

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Cancel the running prompt the way the frontend's Cancel does: api.interrupt(prompt_id)."""
        self.js("async (pid) => { await window.app.api.interrupt(pid); }", prompt_id)
