"""Screenshots of built pages in headless Chromium, to look at the book as readers see it.

    .venv/bin/python tools/screenshots.py                      # the default pages below
    .venv/bin/python tools/screenshots.py book/part2/ch05_mean_square.html#an-interactive-diagram
    .venv/bin/python tools/screenshots.py --dark --width 800 book/intro.html

Reads the HTML build (``--html``, default ``_build/html``) and writes one PNG per page into
``--out`` (default ``_build/screenshots``). Needs a Chromium (Debian: ``apt-get install
chromium``). The pages load MathJax from a CDN; offline, pass a local copy of MathJax 3 with
``--mathjax PATH/tex-mml-chtml.js`` (``npm install mathjax@3`` puts one under
``node_modules/mathjax/es5/``; it is also looked for in a few usual places), otherwise the
math shows as TeX source. The page is copied next to itself with the MathJax address
replaced, photographed, and the copy removed; the build is not changed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Pages (relative to the HTML root, optionally with #anchor) shot by default.
DEFAULT_PAGES = [
    "book/intro.html",
    "book/intro.html#readers-map",
    "book/part2/ch05_mean_square.html#an-interactive-diagram",
    "book/part2/ch06_higher_moments.html",
    "book/part2/ch07_exact_threshold.html",
    "book/part4/ch14_edge_of_ms.html",
    "book/appendix/api.html",
    "book/appendix/theorem_index.html",
    "book/glossary.html",
    "book/bibliography.html",
    "book/how_to_cite.html",
]

MATHJAX_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/[\w.-]+\.js")

MEASURE = """<script>
window.addEventListener("load", function () {
  var measure = function () {
    var el = document.getElementById("ANCHOR");
    var y = el ? el.getBoundingClientRect().top + window.scrollY : -1;
    document.body.setAttribute("data-anchor-y", String(Math.round(y)));
  };
  var ready = window.MathJax && MathJax.startup && MathJax.startup.promise;
  (ready ? MathJax.startup.promise : Promise.resolve()).then(function () {
    setTimeout(measure, 500);
  });
});
</script>"""

#: Chromium's largest screenshot height (pixels).
MAX_HEIGHT = 16000

MATHJAX_CANDIDATES = [
    ROOT / "node_modules/mathjax/es5/tex-mml-chtml.js",
    Path("/usr/share/nodejs/mathjax-full/es5/tex-mml-chtml.js"),
    Path("/usr/share/javascript/mathjax/es5/tex-mml-chtml.js"),
]


def find_browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found: install one (Debian: apt-get install chromium)")


def find_mathjax(given: str | None) -> Path | None:
    if given:
        path = Path(given).resolve()
        if not path.is_file():
            raise SystemExit(f"--mathjax {given}: no such file")
        return path
    return next((p for p in MATHJAX_CANDIDATES if p.is_file()), None)


def chromium(browser: str, url: str, width: int, height: int, wait_ms: int, dark: bool,
             *extra: str) -> subprocess.CompletedProcess:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--allow-file-access-from-files", f"--window-size={width},{height}",
        f"--virtual-time-budget={wait_ms}", *extra,
    ]
    if dark:
        command.append("--blink-settings=preferredColorScheme=0")
    command.append(url)
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=180)


def shoot(
    browser: str,
    html_root: Path,
    page: str,
    out: Path,
    width: int,
    height: int,
    mathjax: Path | None,
    dark: bool,
    wait_ms: int,
) -> Path:
    """Photograph one page; with ``#anchor``, the window of ``height`` starting there.

    Headless Chromium paints only the top of a page, so an anchored shot measures where the
    anchor lies (after the formulas are typeset), photographs the page down to there and
    crops.
    """
    from PIL import Image

    name, _, anchor = page.partition("#")
    source = html_root / name
    if not source.is_file():
        raise SystemExit(f"{source} does not exist: build the book first (make book)")
    text = source.read_text(encoding="utf-8")
    if mathjax is not None:
        text = MATHJAX_CDN.sub(mathjax.as_uri(), text)
    if anchor:
        text = text.replace("</body>", MEASURE.replace("ANCHOR", anchor) + "</body>", 1)
    copy = source.with_name(f".screenshot-{source.name}")
    copy.write_text(text, encoding="utf-8")
    stem = name.removesuffix(".html").replace("/", "_") + (f"_{anchor}" if anchor else "")
    target = out / f"{stem}{'_dark' if dark else ''}.png"
    try:
        top = 0
        if anchor:
            dom = chromium(browser, copy.as_uri(), width, height, wait_ms, dark, "--dump-dom")
            found = re.search(r'data-anchor-y="(-?\d+)"', dom.stdout)
            if not found or int(found.group(1)) < 0:
                raise SystemExit(f"{page}: no element with id {anchor!r}")
            top = max(0, int(found.group(1)) - 20)
        full = min(MAX_HEIGHT, top + height)
        chromium(browser, copy.as_uri(), width, full, wait_ms, dark, f"--screenshot={target}")
    finally:
        copy.unlink(missing_ok=True)
    if top:
        with Image.open(target) as image:
            image.crop((0, min(top, full - 1), width, full)).save(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", help="pages relative to --html, [#anchor]")
    parser.add_argument("--html", default=str(ROOT / "_build/html"))
    parser.add_argument("--out", default=str(ROOT / "_build/screenshots"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--mathjax", help="local MathJax 3 tex-mml-chtml.js")
    parser.add_argument("--dark", action="store_true", help="prefer the dark colour scheme")
    parser.add_argument("--wait-ms", type=int, default=20000,
                        help="virtual time for scripts (MathJax) before the shot")
    args = parser.parse_args(argv)
    browser = find_browser()
    mathjax = find_mathjax(args.mathjax)
    if mathjax is None:
        print("no local MathJax found: math will show as TeX (see --mathjax)", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for page in args.pages or DEFAULT_PAGES:
        target = shoot(browser, Path(args.html), page, out, args.width, args.height,
                       mathjax, args.dark, args.wait_ms)
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
