#!/usr/bin/env python
"""Read the built book as a reader would: serve it on localhost and open every page in headless Chromium.

Checks, for every HTML page of ``_build/html``:

* the page loads (HTTP 200 from the local server, a document with a title);
* every ``<img>`` has loaded (``naturalWidth > 0``); images from other hosts cannot load offline
  and are reported as warnings;
* every internal link points to an existing file, and its ``#fragment`` (if any) to an existing
  ``id``/``name`` in that file;
* no executed notebook shows a Python traceback (a chapter whose cell failed);
* every equation was typeset: after MathJax has finished, no raw TeX delimiter (``$$``, ``\\(``,
  ``\\[``, ``\\begin{``) is left in the page's visible text outside code, and MathJax itself was
  loaded from the book (``_static/mathjax``), not from another host.

Writes full-page screenshots of the index and the Tables chapter (plus any ``--screenshot`` page)
to ``_build/screenshots/`` and a JSON report beside them. Exit status 1 if any check fails.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver`` and is driven through
Selenium with ``--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
--disable-component-update --disable-sync`` and a fresh ``--user-data-dir``.

Usage:
    python scripts/check_book.py [_build/html] [--screenshot notebooks/01_data.html] [--out _build/screenshots]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCREENSHOTS = ("index.html", "notebooks/05_tables.html")
_SKIP_DIRS = ("_static", "_sources", "_images", "_sphinx_design_static", "_panels_static")
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) from a daemon thread; returns (server, base URL)."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def pages(html_dir: Path) -> list[str]:
    """Every HTML page, relative to ``html_dir`` (static assets and sources excluded)."""
    out = []
    for p in sorted(html_dir.rglob("*.html")):
        rel = p.relative_to(html_dir)
        if rel.parts[0] in _SKIP_DIRS:
            continue
        out.append(rel.as_posix())
    return out


def browser(user_data_dir: str, width: int = 1280, height: int = 1000):
    """A headless Chromium driven by the system chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        raise SystemExit("error: chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={user_data_dir}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    driver.set_page_load_timeout(60)
    return driver


#: Raw TeX left in a rendered page: display or inline delimiters and environments that MathJax
#: would have replaced (``$...$`` alone is not checked: a lone dollar is ordinary text).
RAW_TEX = re.compile(r"\$\$.*?\$\$|\$\$|\\\(|\\\[|\\begin\{", re.DOTALL)  # one match per opening delimiter


def raw_tex(text: str, context: int = 30) -> list[str]:
    """The places in ``text`` (a page's visible text outside code) where raw TeX is left, with context."""
    found = []
    for m in RAW_TEX.finditer(text):
        lo, hi = max(0, m.start() - context), min(len(text), m.end() + context)
        found.append(" ".join(text[lo:hi].split()))
    return found


# Waits (up to 20 s) for MathJax 3 to finish typesetting, then returns the visible text outside code,
# MathJax's own output and scripts, and the script URLs that load MathJax.
_JS_MATH = """
const done = arguments[arguments.length - 1];
const collect = () => {
  const skip = 'pre, code, script, style, textarea, mjx-container, .MathJax, .highlight, .cell_input';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement && !node.parentElement.closest(skip)) parts.push(node.textContent);
  }
  const scripts = Array.from(document.scripts).map(s => s.src).filter(src => /mathjax/i.test(src));
  return {text: parts.join(' '), scripts: scripts, typeset: !!(window.MathJax && window.MathJax.startup)};
};
const wait = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
if (wait) {
  Promise.race([wait, new Promise(r => setTimeout(r, 20000))]).then(() => done(collect()), () => done(collect()));
} else {
  done(collect());
}
"""


def math_problems(state: dict, origin: str, has_math: bool) -> list[str]:
    """Errors of a page's maths from the :data:`_JS_MATH` state: raw TeX left in the text, MathJax
    loaded from another host, or a page with maths where MathJax never started."""
    errors = [f"raw TeX left in the rendered page: ...{snippet}..." for snippet in raw_tex(state["text"])]
    for src in state["scripts"]:
        if urlparse(src).netloc not in ("", origin):
            errors.append(f"MathJax loaded from another host (not offline): {src}")
    if has_math and not state["typeset"]:
        errors.append("the page has maths but MathJax did not start (is _static/mathjax in the build?)")
    return errors


_JS_STATE = """
window.scrollTo(0, document.body.scrollHeight);
return {
  title: document.title,
  images: Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),  // resolved by the browser
  url: window.location.href,
  tracebacks: document.querySelectorAll('.output.traceback, .output.error, div.cell_output .traceback').length,
  has_math: document.querySelectorAll('.math, mjx-container').length > 0,
};
"""


def check_page(driver, base: str, html_dir: Path, rel: str, report: dict) -> None:
    url = base + rel
    driver.get(url)
    for _ in range(50):  # wait for the page's images (and MathJax etc.) to settle
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.1)
    state = driver.execute_script(_JS_STATE)
    pending = [src for src, complete, _ in state["images"] if not complete]
    for _ in range(30):
        if not pending:
            break
        time.sleep(0.1)
        state = driver.execute_script(_JS_STATE)
        pending = [src for src, complete, _ in state["images"] if not complete]
    page = {"page": rel, "title": state["title"], "images": len(state["images"]), "internal_links": 0,
            "errors": [], "warnings": []}
    if not state["title"]:
        page["errors"].append("page has no title (did it load?)")
    if state["tracebacks"]:
        page["errors"].append(f"{state['tracebacks']} cell output(s) with a Python traceback")
    origin = urlparse(base).netloc
    driver.set_script_timeout(30)
    page["errors"] += math_problems(driver.execute_async_script(_JS_MATH), origin, bool(state.get("has_math")))
    for src, _, width in state["images"]:
        if width > 0:
            continue
        if urlparse(src).netloc not in ("", origin) and not src.startswith("data:"):
            page["warnings"].append(f"external image not loaded (offline?): {src}")
        else:
            page["errors"].append(f"image did not load: {src}")
    if state["url"] != url:
        page["redirected_to"] = state["url"]
    root = html_dir.resolve()
    for href in state["links"]:
        parsed = urlparse(href)
        if parsed.scheme not in ("http", "https") or parsed.netloc != origin:
            continue  # mailto:, javascript:, and other hosts (not reachable offline) are not checked
        page["internal_links"] += 1
        fragment = urldefrag(href)[1]
        target = (root / unquote(parsed.path.lstrip("/"))).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            shown = target.relative_to(root) if target.is_relative_to(root) else target
            page["errors"].append(f"broken link: {href} (no file {shown})")
            continue
        if fragment and target.suffix == ".html" and unquote(fragment) not in anchors(target):
            page["errors"].append(f"broken anchor: {href} (no id {fragment!r} in {target.relative_to(root)})")
    report["pages"].append(page)


def screenshot(driver, base: str, rel: str, out: Path) -> Path:
    """A full-page PNG of ``rel`` (the window is grown to the page's height, up to 12000 px)."""
    driver.get(base + rel)
    time.sleep(0.5)
    height = int(driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"))
    driver.set_window_size(1280, min(max(height, 800), 12000))
    time.sleep(0.5)
    path = out / (rel.replace("/", "_").removesuffix(".html") + ".png")
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"), help="built book (default: _build/html)")
    ap.add_argument("--out", default=str(ROOT / "_build" / "screenshots"), help="screenshot folder")
    ap.add_argument("--screenshot", action="append", default=[], metavar="PAGE",
                    help="extra page to screenshot, relative to the book root (repeatable)")
    args = ap.parse_args(argv)

    html_dir = Path(args.html).resolve()
    if not (html_dir / "index.html").is_file():
        print(f"error: {html_dir}/index.html not found: build the book first (make book)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server, base = serve(html_dir)
    report: dict = {"base": base, "pages": [], "screenshots": []}
    with tempfile.TemporaryDirectory(prefix="lungseg-chromium-") as profile_dir:
        driver = browser(profile_dir)
        try:
            for rel in pages(html_dir):
                check_page(driver, base, html_dir, rel, report)
            for rel in (*DEFAULT_SCREENSHOTS, *args.screenshot):
                if (html_dir / rel).is_file():
                    report["screenshots"].append(str(screenshot(driver, base, rel, out)))
                else:
                    report["pages"].append({"page": rel, "errors": [f"screenshot page {rel} does not exist"],
                                            "warnings": [], "images": 0, "internal_links": 0, "title": ""})
        finally:
            driver.quit()
            server.shutdown()
    (out / "check_book.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    n_err = sum(len(p["errors"]) for p in report["pages"])
    n_warn = sum(len(p["warnings"]) for p in report["pages"])
    for p in report["pages"]:
        for e in p["errors"]:
            print(f"ERROR {p['page']}: {e}")
    n_img = sum(p["images"] for p in report["pages"])
    n_links = sum(p["internal_links"] for p in report["pages"])
    print(f"check_book: {len(report['pages'])} pages, {n_img} images, {n_links} internal links checked; "
          f"{n_err} errors, {n_warn} warnings; screenshots: {', '.join(report['screenshots'])}")
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
