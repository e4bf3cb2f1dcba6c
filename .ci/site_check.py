"""CI: check the lesson site `course site` built.

    uv run python .ci/site_check.py SITE_DIR

Every local link and image of every page resolves (labs_course.site.broken_links); every notebook
the index names has its page; and a headless Chromium (Debian's `chromium`, or Google Chrome)
renders the index and a lesson page with figures: its DOM holds the lesson links and the figures
as embedded images, and a full-length screenshot of the page shows its first figure (the figure's
main colour, drawn). Exit 1 with one line per problem.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from labs_course.site import MARKER, broken_links


class Page(HTMLParser):
    """A page's images (src, with how many notebook cells come before each) and links (href)."""

    def __init__(self):
        super().__init__()
        self.images: list[tuple[str, int]] = []  # (src, the number of cells before it)
        self.links: list[str] = []
        self.missing: list[str] = []  # the index's "(not built)" entries
        self._cell = 0
        self._in_missing = False

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if (values.get("id") or "").startswith("cell-id="):
            self._cell += 1
        if tag == "img":
            self.images.append((values.get("src") or "", self._cell))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        self._in_missing = "missing" in (values.get("class") or "").split()

    def handle_data(self, data):
        if self._in_missing:
            self.missing.append(data.strip())
            self._in_missing = False


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def figures(page: Page) -> list[tuple[str, int]]:
    return [(src, cell) for src, cell in page.images if src.startswith("data:image/png;base64,")]


def main_colour(data_uri: str) -> tuple[tuple[int, int, int], int]:
    """A figure's most common colour that is not near white (a hue, when it has one), and how
    many of its pixels have it."""
    figure = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1]))).convert("RGB")
    inked = [(n, c) for n, c in figure.getcolors(1 << 24) if min(c) < 240]
    hues = [(n, c) for n, c in inked if len(set(c)) > 1]
    n, colour = max(hues or inked or [(0, (0, 0, 0))])
    return colour, n


def browser() -> str:
    found = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if found is None:
        raise SystemExit("site check: no chromium on PATH (apt-get install chromium)")
    return found


def chromium(*args: str) -> str:
    done = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise SystemExit(f"site check: chromium failed ({done.returncode}): {done.stderr[-300:]}")
    return done.stdout


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    site = Path(argv[0]).resolve()
    if not (site / MARKER).is_file():
        print(f"site check: {site} is not a site `course site` built", file=sys.stderr)
        return 2
    problems = [f"broken: {line}" for line in broken_links(site)]
    index = parse((site / "index.html").read_text("utf-8"))
    problems += [f"no page for the notebook {name}" for name in index.missing]
    lessons = sorted((site / "lessons").glob("*.html"))
    with_figures = [(p, figures(parse(p.read_text("utf-8")))) for p in lessons]
    with_figures = [(p, f) for p, f in with_figures if f]
    if not lessons:
        problems.append("no lesson pages")
    elif not with_figures:
        problems.append(
            "no lesson page shows a figure (run notebooks with matplotlib's inline "
            "backend: not MPLBACKEND=Agg)"
        )
    else:
        dom = parse(chromium("--dump-dom", (site / "index.html").as_uri()))
        shown = {link for link in dom.links if link.startswith("lessons/")}
        if len(shown) != len(lessons):
            problems.append(f"the browser's index links {len(shown)} of {len(lessons)} lessons")
        # the page whose first figure comes after the fewest cells: it is on the screenshot
        page, expected = min(with_figures, key=lambda pf: pf[1][0][1])
        dom = parse(chromium("--dump-dom", page.as_uri()))
        if len(figures(dom)) != len(expected):
            problems.append(
                f"the browser's {page.name} holds {len(figures(dom))} of {len(expected)} figures"
            )
        colour, in_figure = main_colour(expected[0][0])
        with tempfile.TemporaryDirectory() as tmp:
            shot = Path(tmp) / "lesson.png"  # a tall window: a fragment's scroll shoots blank
            chromium("--window-size=1280,16000", f"--screenshot={shot}", page.as_uri())
            screen = {c: n for n, c in Image.open(shot).convert("RGB").getcolors(1 << 24)}
        drawn, needed = screen.get(colour, 0), min(100, max(1, in_figure // 4))
        if len(screen) < 16 or drawn < needed:
            problems.append(
                f"the screenshot of {page.name} does not show its first figure "
                f"({drawn} pixels of its colour {colour}; {len(screen)} colours)"
            )
        print(
            f"site check: {len(lessons)} lesson pages, {sum(len(f) for _, f in with_figures)} "
            f"figures in {len(with_figures)} of them; in the browser, {page.name}'s first "
            f"figure: {drawn} pixels of its colour {colour} on screen"
        )
    for line in problems:
        print(f"site check: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
