"""``course site``: the course as a static website, built offline.

The index is the course map, in its order. Each notebook the map names gets a lesson page: the
notebook run, with its outputs and figures (nbconvert's JupyterLab page, images embedded), a Colab
badge, the local command, and links to the lessons before and after it (the order in which the map
first names them). Each package's README becomes a lab page, its links to the other READMEs
pointing at their pages and its other repository links at GitHub.

The notebooks come run from ``--executed DIR`` (the test suite saves them there when
``LABS_EXECUTED_DIR`` is set) or are run here, one kernel each, in a temporary course root, so
nothing lands in the checkout or in the learner's progress. A notebook that is missing is reported
and skipped; one that fails is named, the other pages are still built, and the command exits 1.

``--out`` is only ever replaced when it is empty or a site this command built (it holds
``MARKER``); the new site is built in a temporary folder beside it and moved into place.
"""

from __future__ import annotations

import argparse
import base64
import logging
import mimetypes
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .catalog import Item, Section, load_map
from .errors import CourseError
from .links import BRANCH, REPOSITORY, colab_url
from .paths import data_dir, root

MARKER = ".course-site"
MARKER_TEXT = "A site built by `course site`; the command replaces this folder when it rebuilds.\n"
CELL_TIMEOUT = 600  # seconds one cell may run
TEMPLATES = Path(__file__).with_name("site_templates")
# nbformat, nbconvert, nbclient, jinja2 and mistune are imported where used: `course` itself
# starts without them (nbformat alone takes seconds to import on a busy machine).


@dataclass
class Lab:
    folder: str  # under packages/
    name: str  # the distribution
    scripts: tuple[str, ...]
    readme: Path


@dataclass
class Lesson:
    name: str
    items: list[Item] = field(default_factory=list)  # the map's items that name it
    built: bool = False
    title: str = ""  # the notebook's own title (its first "# " heading), once loaded

    @property
    def href(self) -> str:
        return f"lessons/{self.name}.html"


@dataclass
class Report:
    built: list[str] = field(default_factory=list)
    labs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def lessons_in_order(sections: list[Section]) -> list[Lesson]:
    """Every notebook the map names, in the order the map first names it."""
    lessons: dict[str, Lesson] = {}
    for section in sections:
        for item in section.items:
            for name in item.notebooks:
                lessons.setdefault(name, Lesson(name)).items.append(item)
    return list(lessons.values())


def find_labs(packages: Path) -> list[Lab]:
    """Each ``packages/<folder>/`` with a README and a pyproject, in folder order."""
    labs = []
    for readme in sorted(packages.glob("*/README.md")):
        project_file = readme.with_name("pyproject.toml")
        project = (
            tomllib.loads(project_file.read_text("utf-8")).get("project", {})
            if project_file.is_file()
            else {}
        )
        folder = readme.parent.name
        labs.append(
            Lab(folder, project.get("name", folder), tuple(project.get("scripts", {})), readme)
        )
    return labs


# ---------------------------------------------------------------- the output folder


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is not empty and not a site this command built."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CourseError(f"--out {out} is not a folder; give a new folder or a site built before")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise CourseError(
            f"--out {out} holds files that are not a site `course site` built; "
            "give a new or empty folder"
        )


def _replace(out: Path, built: Path) -> None:
    """Move the finished site ``built`` (a folder beside ``out``) into place as ``out``."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- notebooks


def first_error(nb) -> str | None:
    """``cell N: Name: value`` for the first error output of an executed notebook, else None."""
    for i, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = str(output.get("evalue", "")).strip().splitlines()
                return f"cell {i}: {output.get('ename', 'error')}: {value[0] if value else ''}"
    return None


def execute(nb, env_root: Path) -> str | None:
    """Run ``nb`` in place in a fresh kernel whose course root and working folder are
    ``env_root``; None when every cell ran, else what failed, in one line."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    env = dict(os.environ, LABS_ROOT=str(env_root), PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("MPLBACKEND", None)  # matplotlib's inline backend: figures become outputs
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(env_root)}},
    )
    try:
        # the kernel's own log (cell output comes over its channels): not on the learner's screen
        client.execute(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except CellExecutionError:
        return first_error(nb) or "a cell failed"
    except Exception as exc:  # a dead kernel, a timeout, no kernel at all: name it, go on
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return first_error(nb)


def _temporary_root() -> tempfile.TemporaryDirectory:
    """A course root for one notebook: the learner's data/ linked in when there is one."""
    folder = tempfile.TemporaryDirectory(prefix="course-site-run-")
    data = data_dir()
    if data.is_dir():
        (Path(folder.name) / "data").symlink_to(data.resolve(), target_is_directory=True)
    return folder


# ---------------------------------------------------------------- pages


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _exporter():
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        template_file="lesson.html.j2",
        embed_images=True,
        extra_loaders=[jinja2.FileSystemLoader(TEMPLATES)],
    )
    exporter.log.setLevel(logging.ERROR)  # not "alternative text is missing" for every figure
    return exporter


def _neighbour(lesson: Lesson | None) -> dict | None:
    return (
        None
        if lesson is None
        else {"href": f"{lesson.name}.html", "title": lesson.title or lesson.name}
    )


def notebook_title(nb) -> str:
    """The first ``# `` heading of a notebook's markdown, or ""."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def render_lesson(
    exporter, nb, lesson: Lesson, before: Lesson | None, after: Lesson | None, folder: Path
) -> str:
    """The lesson page of an executed notebook; ``folder`` resolves its markdown's images."""
    site = {
        "up": "../",
        "prev": _neighbour(before),
        "next": _neighbour(after),
        "colab": colab_url(f"{lesson.name}.ipynb"),
        "command": f"uv run jupyter lab notebooks/{lesson.name}.ipynb",
        "where": [item.title for item in lesson.items],
    }
    resources = {"metadata": {"name": lesson.name, "path": str(folder)}, "site": site}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _markdown(rewrite, embed, heading_id):
    """mistune with GitHub's tables and autolinks, each link and image passed through the site's
    rewriting, and every heading given an id."""
    import mistune
    from mistune.toc import add_toc_hook

    class Renderer(mistune.HTMLRenderer):
        def link(self, text: str, url: str, title: str | None = None) -> str:
            return super().link(text, rewrite(url), title)

        def image(self, text: str, url: str, title: str | None = None) -> str:
            return super().image(text, embed(url), title)

    md = mistune.create_markdown(
        renderer=Renderer(escape=False), plugins=["table", "strikethrough", "url"]
    )
    add_toc_hook(md, min_level=1, max_level=6, heading_id=heading_id)
    return md


def render_readme(lab: Lab, labs: list[Lab], built: set[str], repo: Path) -> str:
    """A lab's README as HTML: GitHub's heading anchors; links to another package's README go
    to its page, to a built notebook to its lesson page, to other repository files to GitHub;
    local images are embedded."""
    here = lab.readme.parent.relative_to(repo).as_posix()
    pages = {f"packages/{other.folder}": f"{other.folder}.html" for other in labs}

    def target(url: str) -> tuple[str, str, str] | None:  # (repository path, query, fragment)
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path or url.startswith("/"):
            return None
        path = posixpath.normpath(posixpath.join(here, unquote(parts.path)))
        return path, parts.query, parts.fragment

    def rewrite(url: str) -> str:
        found = target(url)
        if found is None:
            return url
        path, query, fragment = found
        tail = f"#{fragment}" if fragment else ""
        page = pages.get(path.removesuffix("/README.md"))
        stem = posixpath.basename(path).removesuffix(".ipynb")
        if page is not None:
            return page + tail
        if path.startswith("notebooks/") and path.endswith(".ipynb") and stem in built:
            return f"../lessons/{stem}.html{tail}"
        if path.startswith("../"):
            return url  # outside the repository: left as written (the link check names it)
        return f"{REPOSITORY}/blob/{BRANCH}/{path}" + (f"?{query}" if query else "") + tail

    def embed(url: str) -> str:
        found = target(url)
        file = repo / found[0] if found else None
        if file is None or not file.is_file():
            return url if found is None else rewrite(url)
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return f"data:{kind};base64," + base64.b64encode(file.read_bytes()).decode("ascii")

    taken: dict[str, int] = {}

    def heading_id(token: dict, index: int) -> str:
        slug = github_slug(token["text"])
        n = taken.get(slug, 0)
        taken[slug] = n + 1
        return slug if n == 0 else f"{slug}-{n}"

    return _markdown(rewrite, embed, heading_id)(lab.readme.read_text("utf-8"))


def _readme_title(readme: Path, fallback: str) -> str:
    for line in readme.read_text("utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def render_index(env, sections: list[Section], lessons: dict[str, Lesson], labs: list[Lab]) -> str:
    by_script = {script: lab for lab in labs for script in lab.scripts}
    shown = []
    for section in sections:
        entries = []
        for item in section.items:
            item_lessons = [
                {"name": n, "href": lessons[n].href if lessons[n].built else None}
                for n in item.notebooks
            ]
            item_labs = []
            for command in item.commands:
                lab = by_script.get(command.split()[0]) if command.split() else None
                if lab is not None and lab not in item_labs:
                    item_labs.append(lab)
            entries.append({"item": item, "lessons": item_lessons, "labs": item_labs})
        shown.append(
            {
                "id": section.id,
                "title": section.title,
                "source": section.source,
                "intro": section.intro,
                "entries": entries,
            }
        )
    site = {"up": "", "prev": None, "next": None}
    return env.get_template("index.html.j2").render(
        sections=shown, labs=labs, site=site, title="The course map"
    )


# ---------------------------------------------------------------- the build


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(f"course site: {line}", file=sys.stderr, flush=True)


def build(
    out: Path, sections: list[Section], notebooks: Path, repo: Path, executed: Path | None = None
) -> Report:
    """Build the site into ``out``: lessons from ``executed`` (run notebooks) or from
    ``notebooks`` run here; lab pages from ``repo``/packages/*/README.md."""
    out = out.absolute()
    check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # a site readable as any folder is, not mkdtemp's 0700
    except OSError as exc:
        raise CourseError(f"--out {out}: cannot write beside it ({exc.strerror})") from None
    try:
        report = _build_into(staging, sections, notebooks, repo, executed)
        (staging / MARKER).write_text(MARKER_TEXT, "utf-8")
        check_out(out)  # still ours (or absent, or empty) after the build
        _replace(out, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _load(lesson: Lesson, notebooks: Path, executed: Path | None, report: Report):
    """The executed notebook of ``lesson``, or None (reported) when missing or failing."""
    import nbformat

    source = (executed or notebooks) / f"{lesson.name}.ipynb"
    if not source.is_file():
        report.missing.append(lesson.name)
        _warn(f"{lesson.name}: {source} not found; its page is not built")
        return None
    try:
        nb = nbformat.read(source, as_version=4)
    except Exception as exc:  # not JSON, not a notebook
        report.failed.append(lesson.name)
        _warn(f"{lesson.name}: {source} is not a readable notebook ({type(exc).__name__})")
        return None
    if executed is not None:
        problem = first_error(nb)
    else:
        started = time.monotonic()
        with _temporary_root() as folder:
            problem = execute(nb, Path(folder))
        if problem is None:
            _say(f"  {lesson.name}: ran in {time.monotonic() - started:.1f} s")
    if problem is not None:
        report.failed.append(lesson.name)
        _warn(f"{lesson.name} failed at {problem}")
        return None
    return nb


def _build_into(site: Path, sections, notebooks: Path, repo: Path, executed: Path | None) -> Report:
    report = Report()
    lessons = lessons_in_order(sections)
    if executed is None and lessons:
        quick = " (LABS_QUICK=1: the short runs)" if os.environ.get("LABS_QUICK") == "1" else ""
        _say(f"running the map's {len(lessons)} notebooks, one fresh kernel each{quick}")
    ready = {}
    for lesson in lessons:
        nb = _load(lesson, notebooks, executed, report)
        if nb is not None:
            ready[lesson.name] = nb
            lesson.built, lesson.title = True, notebook_title(nb)
    built = [lesson for lesson in lessons if lesson.built]
    if executed is not None and lessons and not built and not report.failed:
        raise CourseError(
            f"--executed {executed} holds none of the map's notebooks "
            f"({lessons[0].name}.ipynb, ...)"
        )
    (site / "lessons").mkdir()
    exporter = _exporter()
    for i, lesson in enumerate(built):
        before = built[i - 1] if i > 0 else None
        after = built[i + 1] if i + 1 < len(built) else None
        html = render_lesson(exporter, ready[lesson.name], lesson, before, after, notebooks)
        (site / lesson.href).write_text(html, "utf-8")
        report.built.append(lesson.name)
    env = _environment()
    labs = find_labs(repo / "packages")
    (site / "labs").mkdir()
    names = {lesson.name for lesson in built}
    bar = {"up": "../", "prev": None, "next": None}
    for lab in labs:
        page = env.get_template("lab.html.j2").render(
            lab=lab,
            labs=labs,
            body=render_readme(lab, labs, names, repo),
            title=_readme_title(lab.readme, lab.name),
            site=bar,
        )
        (site / "labs" / f"{lab.folder}.html").write_text(page, "utf-8")
        report.labs.append(lab.folder)
    by_name = {lesson.name: lesson for lesson in lessons}
    (site / "index.html").write_text(render_index(env, sections, by_name, labs), "utf-8")
    shutil.copyfile(TEMPLATES / "style.css", site / "style.css")
    return report


# ---------------------------------------------------------------- checking a built site


class _Refs(HTMLParser):
    """Each page's anchors (id, a name) and the URLs it points at (href, src)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (attribute, url)

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("name"):
            self.ids.add(values["name"])
        for attribute in ("href", "src"):
            if values.get(attribute) is not None:
                self.refs.append((attribute, values[attribute]))


def broken_links(site: Path) -> list[str]:
    """Every local link or image of every page of ``site`` that does not resolve (a missing file,
    or a missing anchor in a page of the site), as ``page: attribute="url"`` lines."""
    site = site.resolve()
    pages = {}
    for page in sorted(site.rglob("*.html")):
        parser = _Refs()
        parser.feed(page.read_text("utf-8"))
        pages[page] = parser
    problems = []
    for page, parser in pages.items():
        for attribute, url in parser.refs:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:  # http(s), data:, mailto: ... are not local
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            ok = target.is_file() and target.is_relative_to(site)
            if ok and parts.fragment and target.suffix == ".html":
                ok = unquote(parts.fragment) in pages[target].ids if target in pages else False
            if not ok:
                problems.append(f'{page.relative_to(site).as_posix()}: {attribute}="{url}"')
    return problems


# ---------------------------------------------------------------- the command


def add_parser(sub) -> None:
    """The ``site`` subcommand, for ``course``'s parser."""
    s = sub.add_parser(
        "site",
        help="build the course as a static website",
        description=(
            "The course map as the index, one page per notebook (run, with "
            "its outputs and figures, a Colab badge, the local command, previous and "
            "next), one per lab README. Without --executed each notebook runs here "
            "(LABS_QUICK=1 shortens them). Exit 1 when a notebook failed (named on "
            "stderr; the other pages are built)."
        ),
    )
    s.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=(
            "where the site goes (default: runs/course/site); replaced only when it "
            "is empty or a site built by this command"
        ),
    )
    s.add_argument(
        "--executed",
        type=Path,
        metavar="DIR",
        help=(
            "build from notebooks already run, DIR/<name>.ipynb (for example the "
            "test suite's LABS_EXECUTED_DIR), instead of running them"
        ),
    )


def run(args: argparse.Namespace) -> int:
    repo = root()
    out = args.out or repo / "runs" / "course" / "site"
    if args.executed is not None and not args.executed.is_dir():
        raise CourseError(f"--executed {args.executed} is not a folder")
    notebooks = repo / "notebooks"
    if args.executed is None and not notebooks.is_dir():
        raise CourseError(f"no notebooks/ folder in {repo}; run it from the repository")
    check_out(out.absolute())
    report = build(out, load_map(), notebooks, repo, args.executed)
    counts = f"{len(report.built)} lesson pages, {len(report.labs)} lab pages"
    if report.missing:
        counts += f", {len(report.missing)} notebooks missing"
    if report.failed:
        counts += f", {len(report.failed)} failed ({', '.join(report.failed)})"
    _say(f"site: {counts}; open {(out / 'index.html').absolute()}")
    return 1 if report.failed else 0
