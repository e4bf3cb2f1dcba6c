"""`course site`: the map as the index, one page per notebook (run, figures embedded), the lab
READMEs, links that resolve, an --out that is never a stranger's folder, failures named."""

from __future__ import annotations

import base64
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from labs_course import site
from labs_course.catalog import Item, Section
from labs_course.links import colab_url

RED = (230, 20, 20)


def png(rgb=RED, size=24) -> bytes:
    """A small solid-colour PNG, written by hand (the standard library has no image encoder)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def executed(title: str, image: bool = False, error: bool = False):
    """A notebook as it looks after a run: a title, a printed line, maybe a figure or an error."""
    v4 = nbformat.v4
    nb = v4.new_notebook()
    nb.cells = [
        v4.new_markdown_cell(f"# {title}\n\nWhat this lesson shows."),
        v4.new_code_cell(
            "print('hello')",
            execution_count=1,
            outputs=[v4.new_output("stream", name="stdout", text="hello\n")],
        ),
    ]
    if image:
        data = {"image/png": base64.b64encode(png()).decode(), "text/plain": "<Figure>"}
        nb.cells.append(
            v4.new_code_cell(
                "show()", execution_count=2, outputs=[v4.new_output("display_data", data=data)]
            )
        )
    if error:
        nb.cells.append(
            v4.new_code_cell(
                "1 / 0",
                execution_count=3,
                outputs=[
                    v4.new_output(
                        "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[]
                    )
                ],
            )
        )
    return nb


def images(html: str) -> list[str]:
    """The src of every <img> of a page (nbconvert orders attributes its own way)."""
    found = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                found.append(dict(attrs).get("src", ""))

    Images().feed(html)
    return found


def figures(html: str) -> list[str]:
    return [src for src in images(html) if src.startswith("data:image/png;base64,")]


def item(id_: str, notebooks: tuple[str, ...], commands=("lab-a --go",)) -> Item:
    return Item(id_, f"Item {id_}", f"what {id_} covers", tuple(commands), notebooks, "", (), "")


# the order the map first names them: first, second, broken, absent
MAP = [
    Section(
        "s1",
        "Section one",
        "001",
        "The first section.",
        False,
        (item("one", ("first",)), item("two", ("second", "first"))),
    ),
    Section(
        "s2",
        "Section two",
        "002",
        "",
        False,
        (item("three", ("broken", "second", "absent"), commands=("lab-b",)),),
    ),
]


def write_repo(base: Path) -> Path:
    """Two packages with READMEs that link to each other, to the repository, to themselves."""
    for folder, name, readme in [
        (
            "lab_a",
            "lab-a",
            (
                "# lab-a: the first lab\n\n## Usage\n\nRun `lab-a --go`. See "
                "[lab b](../lab_b/README.md) and [its notes](../lab_b/README.md#notes-and-more).\n"
            ),
        ),
        (
            "lab_b",
            "lab-b",
            (
                "# lab-b\n\nBack to [lab a](../lab_a/README.md#usage), the "
                "[root README](../../README.md#setup), [a doc](../../docs/guide.md), "
                "[below](#notes-and-more), [the first lesson](../../notebooks/first.ipynb), "
                "<https://pytorch.org>.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![dot](dot.png)\n\n"
                "## Notes, and more\n\nText.\n"
            ),
        ),
    ]:
        pkg = base / "packages" / folder
        pkg.mkdir(parents=True)
        (pkg / "README.md").write_text(readme)
        (pkg / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\n\n[project.scripts]\n{name} = "x:main"\n'
        )
    (base / "packages" / "lab_b" / "dot.png").write_bytes(png((0, 0, 200), 4))
    return base


@pytest.fixture
def repo(tmp_path) -> Path:
    write_repo(tmp_path / "repo")
    runs = tmp_path / "executed"
    runs.mkdir()
    nbformat.write(executed("First lesson"), runs / "first.ipynb")
    nbformat.write(executed("Second lesson", image=True), runs / "second.ipynb")
    nbformat.write(executed("Broken lesson", error=True), runs / "broken.ipynb")
    return tmp_path


def build(repo: Path, out: Path, **kw) -> site.Report:
    return site.build(
        out,
        MAP,
        repo / "repo" / "notebooks",
        repo / "repo",
        executed=kw.get("executed", repo / "executed"),
    )


def test_site_from_executed_notebooks(repo, capsys):
    out = repo / "site"
    report = build(repo, out)
    err = capsys.readouterr().err
    assert report.built == ["first", "second"] and report.labs == ["lab_a", "lab_b"]
    assert report.failed == ["broken"] and report.missing == ["absent"]
    assert "course site: broken failed at cell 3: ZeroDivisionError: division by zero" in err
    assert "course site: absent:" in err and "not built" in err
    assert (out / site.MARKER).is_file()

    index = (out / "index.html").read_text()
    assert (
        index.index("Section one")
        < index.index("Item one")
        < index.index("Item two")
        < index.index("Section two")
        < index.index("Item three")
    )
    assert index.index('href="lessons/first.html"') < index.index('href="lessons/second.html"')
    assert "absent (not built)" in index and "broken (not built)" in index
    assert "<code>uv run lab-a --go</code>" in index and 'href="labs/lab_a.html"' in index

    first = (out / "lessons" / "first.html").read_text()
    second = (out / "lessons" / "second.html").read_text()
    assert 'href="second.html" rel="next">Second lesson</a>' in first and 'rel="prev"' not in first
    assert 'href="first.html" rel="prev"' in second and 'rel="next"' not in second
    assert f'href="{colab_url("first.ipynb")}"' in first and "colab-badge.svg" in first
    assert "uv run jupyter lab notebooks/first.ipynb" in first
    assert "In the course: Item one; Item two" in first
    assert "First lesson" in first and "hello" in first
    assert len(figures(second)) == 1 and figures(first) == []

    lab_b = (out / "labs" / "lab_b.html").read_text()
    assert 'href="lab_a.html#usage"' in lab_b
    assert 'href="https://github.com/pytorch-labs/pytorch-labs/blob/main/README.md#setup"' in lab_b
    assert 'href="https://github.com/pytorch-labs/pytorch-labs/blob/main/docs/guide.md"' in lab_b
    assert 'href="../lessons/first.html"' in lab_b and 'href="https://pytorch.org"' in lab_b
    assert '<h2 id="notes-and-more">' in lab_b and 'href="#notes-and-more"' in lab_b
    assert "<table>" in lab_b and len(figures(lab_b)) == 1
    lab_a = (out / "labs" / "lab_a.html").read_text()
    assert 'href="lab_b.html#notes-and-more"' in lab_a and '<h2 id="usage">' in lab_a
    assert site.broken_links(out) == []


def test_broken_links_are_found(repo):
    out = repo / "site"
    build(repo, out)
    page = out / "labs" / "lab_a.html"
    page.write_text(
        page.read_text() + '<a href="gone.html">x</a><img src="../nope.png">'
        '<a href="lab_b.html#no-such-heading">y</a><a href="#usage">ok</a>'
        '<a href="../../outside.html">z</a>'
    )
    assert site.broken_links(out) == [
        'labs/lab_a.html: href="gone.html"',
        'labs/lab_a.html: src="../nope.png"',
        'labs/lab_a.html: href="lab_b.html#no-such-heading"',
        'labs/lab_a.html: href="../../outside.html"',
    ]


def test_rebuild_replaces_its_own_site(repo):
    out = repo / "site"
    build(repo, out)
    (out / "lessons" / "stale.html").write_text("from an older build")
    (repo / "executed" / "second.ipynb").unlink()
    report = build(repo, out)
    assert report.built == ["first"] and "second" in report.missing
    assert not (out / "lessons" / "stale.html").exists()
    assert not (out / "lessons" / "second.html").exists()
    assert 'rel="next"' not in (out / "lessons" / "first.html").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["executed", "repo", "site"]  # no leftovers
    assert site.broken_links(out) == []


def write_series(home: Path, good=True) -> Path:
    """The first two series notebooks of the real map, unexecuted, in home/notebooks."""
    v4 = nbformat.v4
    folder = home / "notebooks"
    folder.mkdir()
    picture = base64.b64encode(png()).decode()
    ok = v4.new_notebook(
        cells=[
            v4.new_markdown_cell("# Tensors"),
            v4.new_code_cell(
                "import os\nfrom pathlib import Path\nPath('landed.txt').write_text('x')\n"
                "print('quick', os.environ.get('LABS_QUICK'),\n"
                "      'root', os.environ['LABS_ROOT'])"
            ),
            v4.new_code_cell(
                "from IPython.display import Image, display\nimport base64\n"
                f"display(Image(data=base64.b64decode({picture!r})))"
            ),
        ]
    )
    bad = v4.new_notebook(
        cells=[
            v4.new_markdown_cell("# Autograd"),
            v4.new_code_cell("print('before')"),
            v4.new_code_cell("raise ValueError('boom')"),
        ]
    )
    nbformat.write(ok, folder / "2-1-1-tensors.ipynb")
    nbformat.write(bad if not good else ok, folder / "2-1-2-autograd.ipynb")
    return folder


def test_runs_the_notebooks_names_a_failure_and_builds_the_rest(home, course, monkeypatch):
    monkeypatch.setenv("LABS_QUICK", "1")
    folder = write_series(home, good=False)
    before = sorted(p.name for p in folder.iterdir())
    (home / "packages" / "lab_a").mkdir(parents=True)
    (home / "packages" / "lab_a" / "README.md").write_text("# lab a\n")
    code, out, err = course("site", "--out", "built")
    assert code == 1
    assert "course site: 2-1-2-autograd failed at cell 3: ValueError: boom" in err
    assert "course site: 2-1-3-nn-module:" in err  # the map names it; it is missing here
    assert "running the map's" in out and "(LABS_QUICK=1: the short runs)" in out
    assert "failed (2-1-2-autograd)" in out.splitlines()[-1]
    page = (home / "built" / "lessons" / "2-1-1-tensors.html").read_text()
    assert "quick 1 root" in page and str(home) not in page.split("quick 1 root")[1][:200]
    assert len(figures(page)) == 1
    assert not (home / "built" / "lessons" / "2-1-2-autograd.html").exists()
    assert (home / "built" / "labs" / "lab_a.html").is_file()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing landed in notebooks/
    assert not (home / "landed.txt").exists() and not (home / "runs").exists()
    assert site.broken_links(home / "built") == []


def test_out_refuses_a_folder_it_did_not_build(home, course, repo):
    foreign = home / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    executed_dir = str(repo / "executed")
    code, out, err = course("site", "--executed", executed_dir, "--out", str(foreign))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "not a site `course site` built" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"
    (home / "afile").write_text("x")
    code, _, err = course("site", "--executed", executed_dir, "--out", str(home / "afile"))
    assert code == 2 and "is not a folder" in err and (home / "afile").read_text() == "x"
    code, _, err = course("site", "--executed", str(home / "nowhere"))
    assert code == 2 and err.count("\n") == 1 and "--executed" in err and "is not a folder" in err
    code, out, _ = course("site", "--help")
    assert code == 0 and "--executed DIR" in out and "--out DIR" in out


def test_cli_builds_from_executed_and_rebuilds(home, course, repo):
    executed_dir = repo / "executed"
    for name, title in [("2-1-1-tensors", "Tensors"), ("2-1-2-autograd", "Autograd")]:
        nbformat.write(executed(title, image=True), executed_dir / f"{name}.ipynb")
    (home / "empty").mkdir()
    for _ in range(2):  # an empty folder first, then over its own site
        code, out, err = course("site", "--executed", str(executed_dir), "--out", "empty")
        assert code == 0, err
        assert out.splitlines()[-1].startswith("site: 2 lesson pages, ")
    page = (home / "empty" / "lessons" / "2-1-1-tensors.html").read_text()
    assert 'href="2-1-2-autograd.html" rel="next"' in page
    code, _, err = course("site", "--executed", str(home / "empty"), "--out", "other")
    assert code == 2 and "holds none of the map's notebooks" in err
    assert not (home / "other").exists()


CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (CI installs it)")
def test_a_browser_shows_the_figures(repo, tmp_path):
    out = repo / "site"
    build(repo, out)
    lesson = (out / "lessons" / "second.html").as_uri()
    dom = chromium("--dump-dom", lesson).stdout
    assert "Second lesson" in dom and len(figures(dom)) == 1
    index_dom = chromium("--dump-dom", (out / "index.html").as_uri()).stdout
    assert 'href="lessons/first.html"' in index_dom
    Image = pytest.importorskip("PIL.Image")
    shot = tmp_path / "second.png"
    chromium("--window-size=1000,1400", f"--screenshot={shot}", lesson)
    colours = {colour: n for n, colour in Image.open(shot).convert("RGB").getcolors(1 << 24)}
    assert colours.get(RED, 0) >= 20 * 20  # the figure, drawn (24x24 pixels, or more when scaled)
