"""The built book needs nothing from the network, and its plots show no missing glyphs.

Teachers zip ``_build/html`` and open it from a USB stick or a classroom
server; readers where a CDN is slow or blocked read the same pages. So every
script, stylesheet, font and image a page loads must be a file inside
``_build/html``, reached by a relative link. Links to other web sites
(``<a href>``) are fine.

The checks of the build are marked ``book``. They read ``_build/html`` (or the
folder in MMLEARN_BOOK_HTML, e.g. a ``tools/build_subset.py`` build). Under
``make test`` (MMLEARN_BOOK_BUILT=1) a missing build fails; otherwise they skip.
The other tests check the scanner and ``tools/vendor_assets.py`` on made-up input.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import vendor_assets  # noqa: E402

# Tags and attributes through which a page makes the browser fetch something.
FETCHING_ATTRIBUTES = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "iframe": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "input": ("src",),
}
# <link rel=...> values that fetch (or connect) rather than merely point somewhere.
FETCHING_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "preconnect",
    "dns-prefetch",
    "icon",
    "apple-touch-icon",
    "manifest",
}
CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""")
MODULE_IMPORT = re.compile(r"""\bimport\b[^;]*?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]""")
# Matplotlib's warning when a label uses a character its font lacks (a tofu box).
MISSING_GLYPH = re.compile(r"Glyph \d+\b.{0,80}? missing from (?:current )?font")
NOT_FILES = ("data:", "blob:", "about:", "javascript:", "mailto:", "tel:", "#")


# --- the scanner --------------------------------------------------------------


class PageScanner(HTMLParser):
    """Collect what a page fetches, where its links point, and its inline CSS."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[tuple[str, str]] = []  # (what, url)
        self.links: list[str] = []  # <a href>
        self.css: list[str] = []  # <style> blocks and style="" attributes
        self.module_code: list[str] = []  # inline <script type="module"> bodies
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name in FETCHING_ATTRIBUTES.get(tag, ()):
            if values.get(name):
                urls = values[name].split(",") if name == "srcset" else [values[name]]
                self.fetched += [(f"<{tag} {name}>", url.strip().split(" ")[0]) for url in urls]
        rels = set(values.get("rel", "").lower().split())
        if tag == "link" and rels & FETCHING_RELS and values.get("href"):
            self.fetched.append((f"<link rel={values['rel']}>", values["href"]))
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if values.get("style"):
            self.css.append(values["style"])
        if tag == "style" or (tag == "script" and values.get("type") == "module"):
            self._inside = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside == "style":
            self.css.append(data)
        elif self._inside == "script":
            self.module_code.append(data)


def css_urls(text: str) -> list[str]:
    """The url(...) and @import targets of a piece of CSS."""
    return [match.group(2) or match.group(4) for match in CSS_URL.finditer(text)]


def scan_page(text: str) -> list[tuple[str, str]]:
    """Every (what, url) a page makes the browser load: tags, inline CSS, module imports."""
    scanner = PageScanner()
    scanner.feed(text)
    fetched = list(scanner.fetched)
    fetched += [("inline CSS url()", url) for block in scanner.css for url in css_urls(block)]
    fetched += [
        ("module import", a or b)
        for code in scanner.module_code
        for a, b in MODULE_IMPORT.findall(code)
    ]
    return fetched


def is_remote(url: str) -> bool:
    """True for a URL that leaves the book: another host, or scheme-relative."""
    return urlsplit(url.strip()).scheme.lower() in {"http", "https", "ftp", "ws", "wss"} or (
        url.strip().startswith("//")
    )


def local_target(base: Path, url: str) -> Path | None:
    """The file a relative URL in `base` names, or None for URLs that name no file."""
    url = url.strip()
    if not url or url.startswith(NOT_FILES) or is_remote(url) or urlsplit(url).scheme:
        return None
    path = unquote(urlsplit(url).path)
    return (base.parent / path).resolve() if path else None


def problems_of(base: Path, root: Path, fetched: list[tuple[str, str]]) -> list[str]:
    """Why these references would fail offline, from a USB stick, or on another path."""
    found = []
    for what, url in fetched:
        target = local_target(base, url)
        if is_remote(url):
            found.append(f"{what} {url}: loaded from the network")
        elif url.strip().startswith("/"):
            found.append(f"{what} {url}: root-absolute link (breaks off the web server's root)")
        elif target is not None and not target.is_relative_to(root.resolve()):
            found.append(f"{what} {url}: outside the book")
        elif target is not None and not target.exists():
            found.append(f"{what} {url}: missing from the build")
    return found


# --- the build ------------------------------------------------------------------


def book_html() -> Path:
    """The built book's HTML folder; fail or skip as the module docstring says."""
    folder = Path(os.environ.get("MMLEARN_BOOK_HTML", ROOT / "_build" / "html"))
    if (folder / "index.html").exists():
        return folder
    if os.environ.get("MMLEARN_BOOK_BUILT") == "1":
        pytest.fail(f"{folder} is missing: the book build did not produce it")
    pytest.skip(f"{folder} is missing: run `make book` first (or set MMLEARN_BOOK_HTML)")


def pages(folder: Path) -> list[Path]:
    """Every HTML page of the book (not the copies of sources and static files)."""
    skipped = {"_static", "_sources", "_images"}
    return sorted(
        path for path in folder.rglob("*.html") if not skipped & set(path.relative_to(folder).parts)
    )


def report(problems: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}:\n  " + "\n  ".join(found) for page, found in problems.items())


@pytest.mark.book
def test_no_page_loads_anything_from_the_network():
    folder = book_html()
    problems = {}
    for page in pages(folder):
        fetched = scan_page(page.read_text(encoding="utf-8"))
        found = [p for p in problems_of(page, folder, fetched) if "network" in p]
        if found:
            problems[page.relative_to(folder).as_posix()] = found
    assert not problems, "pages that need the network:\n" + report(problems)


@pytest.mark.book
def test_every_resource_a_page_loads_is_inside_the_build():
    folder = book_html()
    problems = {}
    for page in pages(folder):
        fetched = scan_page(page.read_text(encoding="utf-8"))
        found = [p for p in problems_of(page, folder, fetched) if "network" not in p]
        if found:
            problems[page.relative_to(folder).as_posix()] = found
    assert not problems, "resources that do not travel with _build/html:\n" + report(problems)


@pytest.mark.book
def test_stylesheets_load_fonts_and_images_from_the_build():
    folder = book_html()
    problems = {}
    for sheet in sorted(folder.rglob("*.css")):
        fetched = [("CSS url()", url) for url in css_urls(sheet.read_text(encoding="utf-8"))]
        found = problems_of(sheet, folder, fetched)
        if found:
            problems[sheet.relative_to(folder).as_posix()] = found
    assert not problems, "stylesheets that need files from elsewhere:\n" + report(problems)


@pytest.mark.book
def test_links_between_pages_resolve_inside_the_build():
    folder = book_html()
    problems = {}
    for page in pages(folder):
        scanner = PageScanner()
        scanner.feed(page.read_text(encoding="utf-8"))
        found = problems_of(
            page, folder, [("<a href>", url) for url in scanner.links if not is_remote(url)]
        )
        if found:
            problems[page.relative_to(folder).as_posix()] = found
    assert not problems, "links that break when the book is opened from disk:\n" + report(problems)


@pytest.mark.book
def test_the_build_serves_the_pinned_vendored_scripts():
    folder = book_html()
    manifest = folder / "_static" / "vendored" / "manifest.json"
    assert manifest.exists(), (
        "the build has no _static/vendored/: is tools/vendor_assets.py "
        "listed under sphinx.local_extensions in _config.yml?"
    )
    packages = json.loads(manifest.read_text(encoding="utf-8"))["packages"]
    assert packages == vendor_assets.expected_manifest()


@pytest.mark.book
def test_plots_have_no_missing_glyphs():
    """Matplotlib warns on stderr, which the book shows, when a label has a character
    its font lacks: that plot shows tofu boxes. Use English labels or bundle a font."""
    folder = book_html()
    problems = {}
    for page in pages(folder):
        text = html.unescape(page.read_text(encoding="utf-8"))
        found = sorted(set(MISSING_GLYPH.findall(text)))
        if found:
            problems[page.relative_to(folder).as_posix()] = found
    assert not problems, "plots with missing glyphs (tofu boxes):\n" + report(problems)


# --- the scanner on made-up pages -------------------------------------------------

CDN_PAGE = """<html><head>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Noto+Sans">
<link rel="preload" as="font" href="https://example.org/font.woff2">
<link rel="canonical" href="https://example.org/book/">
<style>@font-face { src: url("https://example.org/a.woff2") format("woff2"); }
@import 'https://example.org/extra.css';</style>
<script type="module">import mermaid from "https://cdn.jsdelivr.net/npm/mermaid/dist/x.mjs";</script>
</head><body><img srcset="https://example.org/a.png 1x, local.png 2x">
<div style="background: url(https://example.org/bg.png)"></div>
<a href="https://github.com/">a link to another site is fine</a></body></html>"""


def test_scanner_finds_every_kind_of_remote_resource(tmp_path):
    page = tmp_path / "page.html"
    found = problems_of(page, tmp_path, scan_page(CDN_PAGE))
    remote = [p for p in found if "network" in p]
    kinds = {p.split(" ")[0] for p in remote}
    assert len(remote) == 8, found
    assert {"<script", "<link", "inline", "module", "<img"} <= kinds
    assert not any("canonical" in p or "github" in p for p in found)
    assert any("local.png: missing" in p for p in found)


def test_scanner_accepts_a_page_whose_resources_are_all_local(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "app.js").write_text("", encoding="utf-8")
    (tmp_path / "_static" / "font.woff2").write_bytes(b"")
    (tmp_path / "book").mkdir()
    page = tmp_path / "book" / "page.html"
    text = (
        '<script src="../_static/app.js?v=1"></script><img src="data:image/png;base64,AA">'
        "<style>@font-face{src:url(../_static/font.woff2#x)}</style>"
    )
    assert problems_of(page, tmp_path, scan_page(text)) == []
    absolute = problems_of(page, tmp_path, scan_page('<script src="/_static/app.js"></script>'))
    assert absolute and "root-absolute" in absolute[0]
    outside = problems_of(page, tmp_path, scan_page('<img src="../../elsewhere.png">'))
    assert outside and "outside the book" in outside[0]


def test_missing_glyph_warning_is_recognised():
    stderr = (
        "/usr/lib/python3/matplotlib/backends/backend_agg.py:211: UserWarning: Glyph 27880 "
        "(\\N{CJK UNIFIED IDEOGRAPH-6CE8}) missing from font(s) DejaVu Sans."
    )
    assert MISSING_GLYPH.findall(stderr)
    assert MISSING_GLYPH.findall("Glyph 27880 missing from current font.")
    assert not MISSING_GLYPH.findall("all glyphs were found")


# --- tools/vendor_assets.py ---------------------------------------------------------


def test_sri_hash_matches_the_npm_format(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    # The SHA-512 of no bytes, base64-encoded as in package-lock.json.
    assert vendor_assets.sri_sha512(empty) == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )


def test_tarball_names_fold_the_scope():
    package = vendor_assets.PACKAGES[-1]
    assert package.name.startswith("@")
    expected = f"jupyter-widgets-html-manager-{package.version}.tgz"
    assert vendor_assets.tarball_name(package) == expected


def make_tarball(members: dict[str, bytes]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def test_only_the_kept_files_and_the_licence_are_selected():
    package = vendor_assets.Package(
        name="lib",
        version="1.0.0",
        integrity="",
        folder="lib",
        root="dist",
        keep=("lib.min.js", "fonts/*"),
    )
    archive = make_tarball(
        {
            "package/LICENSE": b"MIT",
            "package/dist/lib.min.js": b"1",
            "package/dist/lib.js": b"2",
            "package/dist/fonts/a/b.woff": b"3",
            "package/src/fonts/c.woff": b"4",
            "package/dist/../evil.js": b"5",
        }
    )
    chosen = vendor_assets.selected_members(package, archive)
    assert sorted(chosen) == ["LICENSE", "fonts/a/b.woff", "lib.min.js"]


def test_a_tarball_without_the_kept_files_is_an_error():
    package = vendor_assets.Package(
        name="lib", version="1.0.0", integrity="", folder="lib", root="dist", keep=("lib.min.js",)
    )
    with pytest.raises(SystemExit, match="lib"):
        vendor_assets.selected_members(package, make_tarball({"package/LICENSE": b"MIT"}))


def script(filename, priority=500, **attributes):
    return SimpleNamespace(filename=filename, priority=priority, attributes=attributes)


def test_duplicate_inline_scripts_are_dropped_once():
    scripts = [
        script(None, body="const A = 1"),
        script("x.js"),
        script("", body="const A = 1"),
        script("x.js"),
        script("", body="const B = 2"),
    ]
    vendor_assets.drop_duplicate_inline_scripts(scripts)
    assert [(s.filename, s.attributes.get("body")) for s in scripts] == [
        (None, "const A = 1"),
        ("x.js", None),
        ("x.js", None),
        ("", "const B = 2"),
    ]


class FakeBuilder:
    def __init__(self, scripts):
        self.scripts = scripts

    def add_js_file(self, filename, **attributes):
        priority = attributes.pop("priority", 500)
        self.scripts.append(script(filename, priority, **attributes))


def test_mermaid_is_loaded_as_a_classic_script():
    body = 'import mermaid from "../_static/vendored/mermaid/mermaid.min.js";\nmermaid.run();'
    scripts = [script("a.js"), script("", type="module", body=body), script("b.js")]
    app = SimpleNamespace(
        builder=FakeBuilder(scripts),
        config=SimpleNamespace(mermaid_use_local="vendored/mermaid/mermaid.min.js"),
    )
    vendor_assets.load_mermaid_as_classic_script(app, {}, scripts)
    assert [s.filename for s in scripts] == ["a.js", "b.js", "vendored/mermaid/mermaid.min.js", ""]
    assert scripts[2].attributes == {"defer": "defer"}
    module = scripts[3].attributes
    assert module["type"] == "module"
    assert module["body"].startswith("const mermaid = window.mermaid;")
    assert "import" not in module["body"]


def test_widget_manager_is_told_where_its_fonts_are():
    scripts = [
        script("_static/vendored/requirejs/require.js"),
        script("_static/vendored/html-manager/embed-amd.js"),
        script("c.js"),
    ]
    context = {"pathto": lambda target, resource: "../" + target}
    vendor_assets.point_widget_manager_at_its_fonts(
        SimpleNamespace(builder=FakeBuilder(scripts)), context, scripts
    )
    names = [s.filename for s in scripts]
    assert names == [
        "_static/vendored/requirejs/require.js",
        "c.js",
        "",
        "_static/vendored/html-manager/embed-amd.js",
    ]
    assert (
        '"@jupyter-widgets/html-manager/dist": "../_static/vendored/html-manager"'
        in (scripts[2].attributes["body"])
    )
