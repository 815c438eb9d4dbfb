#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

Usage: ``python scripts/check_book.py [_build/html] [--screenshots DIR]``

For each page listed in ``_toc.yml`` (a missing page fails), the script serves the HTML folder on 127.0.0.1,
loads the page in headless Chromium (Debian's ``chromium``), and fails when:
- any request the page makes (images, scripts, styles, fonts) gets a 404 from the local server;
- an ``<img>`` did not load (checked in the page itself after load: ``complete && naturalWidth > 0``);
- the page shows an execution error (a Python traceback in a cell output);
- MathJax left raw TeX on a page that has math (offline assets missing).
It also takes a screenshot of each page (``--screenshots``, default ``_build/screenshots``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
]
# Injected into every served page: after load (and a moment for MathJax/widgets), write a verdict into the DOM.
PROBE = b"""<script>
window.addEventListener('load', function () { setTimeout(function () {
  var bad = [];
  document.querySelectorAll('img').forEach(function (im) {
    if (!(im.complete && im.naturalWidth > 0)) { bad.push(im.getAttribute('src')); } });
  var p = document.createElement('pre'); p.id = 'book-check'; p.style.display = 'none';
  p.textContent = 'BOOKCHECK ' + JSON.stringify({broken_images: bad,
     mathjax: !!(window.MathJax && window.MathJax.startup && window.MathJax.startup.document)});
  document.body.appendChild(p); }, 1500); });
</script>"""


def toc_pages(toc_path: Path) -> list[str]:
    """Document names listed in a Jupyter Book ``_toc.yml`` (root first)."""
    toc = yaml.safe_load(toc_path.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", p) for p in pages]


class _Handler(http.server.SimpleHTTPRequestHandler):
    missing: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            _Handler.missing.append(self.path)
        super().send_error(code, message, explain)

    def do_GET(self):  # noqa: N802 - http.server API
        path = self.translate_path(self.path.split("?")[0])
        if path.endswith(".html") and Path(path).is_file():
            body = Path(path).read_bytes().replace(b"</body>", PROBE + b"</body>", 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("check_book: Chromium not found (apt-get install chromium)")


def run_chromium(args: list[str], profile: str) -> str:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return out.stdout


def check(html_dir: Path, shots: Path, toc: Path) -> list[str]:
    problems: list[str] = []
    shots.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(html_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for page in toc_pages(toc):
            file = html_dir / f"{page}.html"
            if not file.exists():
                problems.append(f"{page}: page missing ({file})")
                continue
            _Handler.missing = []
            url = f"{base}/{page}.html"
            with tempfile.TemporaryDirectory() as profile:
                dom = run_chromium(["--virtual-time-budget=8000", "--dump-dom", url], profile)
            with tempfile.TemporaryDirectory() as profile:
                png = shots / (page.replace("/", "__") + ".png")
                shot = ["--virtual-time-budget=8000", "--window-size=1280,1800", f"--screenshot={png}", url]
                run_chromium(shot, profile)
            verdict = re.search(r"BOOKCHECK (\{.*?\})</pre>", dom)
            if verdict is None:
                problems.append(f"{page}: the page did not finish loading in Chromium")
                continue
            info = yaml.safe_load(verdict.group(1))
            if info["broken_images"]:
                problems.append(f"{page}: images did not load: {info['broken_images']}")
            missing = sorted({m for m in _Handler.missing if not m.endswith("favicon.ico")})
            if missing:
                problems.append(f"{page}: requests answered 404: {missing}")
            if "Traceback (most recent call last)" in dom or re.search(r'class="[^"]*\btraceback\b', dom):
                problems.append(f"{page}: shows an execution error")
            if re.search(r"\$\$|\\\(|\\\[", _visible_text(dom)) and not info["mathjax"]:
                problems.append(f"{page}: has math but MathJax did not load")
            if not png.exists() or png.stat().st_size == 0:
                problems.append(f"{page}: no screenshot")
            print(f"checked {page}: {len(info['broken_images'])} broken images, screenshot {png.name}")
    finally:
        server.shutdown()
    return problems


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom, flags=re.S)
    return re.sub(r"<[^>]+>", "", dom)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", default=None)
    parser.add_argument("--toc", default=None, help="_toc.yml to read pages from (default: the book's)")
    args = parser.parse_args()
    html = Path(args.html).resolve()
    toc = Path(args.toc) if args.toc else (html.parents[1] / "_toc.yml")
    if not toc.exists():
        toc = ROOT / "_toc.yml"
    shots = Path(args.screenshots) if args.screenshots else html.parent / "screenshots"
    problems = check(html, shots, toc)
    if problems:
        print("\n".join(["BOOK CHECK FAILED:", *problems]))
        sys.exit(1)
    print(f"book check passed: {len(toc_pages(toc))} pages, screenshots in {shots}")


if __name__ == "__main__":
    main()
