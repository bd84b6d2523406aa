"""Serve the book's JavaScript from the book itself: MathJax, Mermaid, d3, RequireJS, widgets.

    python tools/vendor_assets.py           # fetch, verify, unpack (quick when up to date)
    python tools/vendor_assets.py --check   # exit status 1 when the folder is missing or stale

Why: a stock Jupyter Book page loads MathJax (and sphinxcontrib-mermaid loads
Mermaid) from a public CDN. Offline, or where that CDN is slow or blocked,
formulas stay raw TeX and diagrams are missing. This script puts pinned copies
of those libraries into ``_build/vendor/static/vendored/``; the book's build
copies them to ``_build/html/_static/vendored/`` and ``_config.yml`` points
MathJax, Mermaid, d3 and the widget manager there, with relative links, so a
zipped ``_build/html`` works from a USB stick, a classroom server or the web.

How: each package is pinned by version *and* by the SHA-512 integrity that the
npm registry publishes (the hash a ``package-lock.json`` records). ``npm pack``
downloads the tarball through the reader's own npm settings (a registry mirror
such as npmmirror.com, a proxy, the npm cache); this script checks the hash,
then copies only the few files the book loads (no minified bundle is kept in
git). ``make book`` runs it first (``make assets``).

This file is also a Sphinx extension (``_config.yml``: ``local_extensions``).
It adds the unpacked folder to ``html_static_path`` (after Jupyter Book's
``_static`` scan, so no vendored script is injected into every page), stops the
build with a clear message when the folder is missing or stale, and loads
Mermaid as a classic script (see ``load_mermaid_as_classic_script``).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "_build" / "vendor"
TARBALLS = VENDOR / "tarballs"
STATIC = VENDOR / "static"  # added to html_static_path; holds one folder, "vendored"
VENDORED = STATIC / "vendored"  # becomes _build/html/_static/vendored
MANIFEST = VENDORED / "manifest.json"


@dataclass(frozen=True)
class Package:
    """One npm package and the files of it that the book serves."""

    name: str  # the npm name
    version: str
    integrity: str  # "sha512-<base64>", as the registry publishes it
    folder: str  # the folder under vendored/
    root: str  # the folder inside the tarball's package/ that maps to vendored/<folder>/
    keep: tuple[str, ...]  # fnmatch patterns, relative to root, of the files to copy


PACKAGES = (
    Package(
        name="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        folder="mathjax",
        root="es5",
        # The combined component Sphinx uses by default, plus what it loads on
        # demand: TeX extensions (autoload), the CHTML woff fonts, the menu and
        # the accessibility tools (a11y, and the speech rule engine they use).
        keep=("tex-mml-chtml.js", "input/*", "output/*", "ui/*", "a11y/*", "sre/*"),
    ),
    Package(
        name="mermaid",
        version="11.12.1",  # the version sphinxcontrib-mermaid 2.1.1 would load from its CDN
        integrity="sha512-UlIZrRariB11TY1RtTgUWp65tphtBv4CSq7vyS2ZZ2TgoMjs2nloq+wFqxiwcxlhHUvs7DPGgMjs2aeQxz5h9g==",
        folder="mermaid",
        root="dist",
        keep=("mermaid.min.js",),  # the self-contained classic build (sets window.mermaid)
    ),
    Package(
        name="d3",
        version="7.9.0",  # sphinxcontrib-mermaid's d3_version, used by the `:zoom:` option
        integrity="sha512-e1U46jVP+w7Iut8Jt8ri1YsPOvFpg46k+K8TpCb0P+zjCkjkPnV7WzfDJzMHy1LnA+wj5pLT1wjO901gLXeEhA==",
        folder="d3",
        root="dist",
        keep=("d3.min.js",),
    ),
    Package(
        name="requirejs",
        version="2.3.7",  # the module loader of the embedded ipywidgets manager
        integrity="sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        folder="requirejs",
        root="",
        keep=("require.js",),
    ),
    Package(
        name="@jupyter-widgets/html-manager",
        version="1.0.15",  # renders saved ipywidgets 8 state in the static HTML
        integrity="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        folder="html-manager",
        root="dist",
        # embed-amd.js finds its icon fonts next to itself; the tarball has no
        # LICENSE (BSD-3-Clause, in package.json), but lists bundled licences.
        keep=("embed-amd.js", "*.woff2", "*.woff", "*.ttf", "*.eot", "*.svg", "*.LICENSE.txt"),
    ),
)
LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt")


# --- fetching and checking ----------------------------------------------------


def sri_sha512(path: Path) -> str:
    """The subresource-integrity string ("sha512-<base64>") of a file."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def tarball_name(package: Package) -> str:
    """The file name `npm pack` gives a package's tarball (scope folded into the name)."""
    return f"{package.name.lstrip('@').replace('/', '-')}-{package.version}.tgz"


def fetch(package: Package) -> Path:
    """Download a package's tarball with `npm pack` (once) and check its SHA-512."""
    tarball = TARBALLS / tarball_name(package)
    if not (tarball.exists() and sri_sha512(tarball) == package.integrity):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("npm is needed once to fetch the book's JavaScript: install Node.js")
        TARBALLS.mkdir(parents=True, exist_ok=True)
        spec = f"{package.name}@{package.version}"
        subprocess.run(
            [npm, "pack", spec, "--pack-destination", str(TARBALLS), "--loglevel=error"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    actual = sri_sha512(tarball)
    if actual != package.integrity:
        tarball.unlink()
        raise SystemExit(f"{tarball.name}: SHA-512 is {actual}, expected {package.integrity}")
    return tarball


def selected_members(package: Package, archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Map each destination path (relative to vendored/<folder>/) to its tarball member."""
    prefix = PurePosixPath("package", package.root) if package.root else PurePosixPath("package")
    chosen = {}
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if not member.isfile() or ".." in path.parts:
            continue
        if path.parent == PurePosixPath("package") and path.name in LICENCE_FILES:
            chosen[path.name] = member
        elif path.is_relative_to(prefix):
            relative = path.relative_to(prefix).as_posix()
            if any(fnmatch.fnmatch(relative, pattern) for pattern in package.keep):
                chosen[relative] = member
    if not any(key not in LICENCE_FILES for key in chosen):
        raise SystemExit(f"{package.name}: none of {package.keep} is in the tarball")
    return chosen


def unpack(package: Package, tarball: Path, destination: Path) -> list[str]:
    """Copy the kept files of one tarball into destination/<folder>/; return their paths."""
    written = []
    with tarfile.open(tarball) as archive:
        for relative, member in sorted(selected_members(package, archive).items()):
            target = destination / package.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
            written.append(f"{package.folder}/{relative}")
    return written


def expected_manifest() -> dict[str, dict]:
    """What manifest.json says when the folder matches PACKAGES."""
    return {
        p.name: {k: v for k, v in asdict(p).items() if k != "keep"} | {"keep": list(p.keep)}
        for p in PACKAGES
    }


def tool_sha256() -> str:
    """The hash of this file: a change to what it copies must unpack again."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def is_up_to_date() -> bool:
    """True when this very script unpacked vendored/ from PACKAGES and no file is missing."""
    if not MANIFEST.exists():
        return False
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if manifest.get("packages") != expected_manifest() or manifest.get("tool") != tool_sha256():
        return False
    return all((VENDORED / path).is_file() for path in manifest.get("files", []))


def vendor() -> None:
    """Fetch, verify and unpack every package into a fresh vendored/ folder."""
    staging = VENDOR / "vendored.partial"  # outside STATIC, which a running build copies
    shutil.rmtree(staging, ignore_errors=True)
    files = []
    for package in PACKAGES:
        files += unpack(package, fetch(package), staging)
    manifest = {"packages": expected_manifest(), "tool": tool_sha256(), "files": files}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    shutil.rmtree(VENDORED, ignore_errors=True)
    VENDORED.parent.mkdir(parents=True, exist_ok=True)  # absent on a fresh clone
    staging.rename(VENDORED)
    print(f"vendored {len(PACKAGES)} packages ({len(files)} files) into {VENDORED}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, download nothing")
    args = parser.parse_args(argv)
    if is_up_to_date():
        return 0
    if args.check:
        print(f"{VENDORED} is missing or stale: run `python tools/vendor_assets.py`")
        return 1
    vendor()
    return 0


# --- the Sphinx extension -------------------------------------------------------

MERMAID_IMPORT = re.compile(r'^import mermaid from "[^"]*";$', re.MULTILINE)


def configured_paths(config) -> list[str]:
    """The local script paths (relative to _static) that _config.yml gives the libraries."""
    return [
        config.mathjax_path,
        config.mermaid_use_local,
        config.d3_use_local,
        *config.nb_ipywidgets_js,
    ]


def add_vendored_static_path(app, config) -> None:
    """Serve vendored/ as _static/vendored/, after checking it holds what the config names."""
    from sphinx.errors import ConfigError

    if not is_up_to_date():
        raise ConfigError(
            f"{VENDORED} is missing or stale: run `make assets` "
            "(python tools/vendor_assets.py) before building the book"
        )
    missing = [path for path in configured_paths(config) if not (STATIC / path).is_file()]
    if missing:
        raise ConfigError(
            f"_config.yml names scripts that are not vendored: {missing} "
            f"(expected under {VENDORED}, or a CDN URL slipped in)"
        )
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def load_mermaid_as_classic_script(app, context: dict, scripts: list) -> None:
    """Load Mermaid with a classic <script> instead of an ES-module import.

    sphinxcontrib-mermaid writes an inline module that starts with
    ``import mermaid from "<mermaid_use_local>";``. Browsers refuse module
    imports on pages opened from disk (file://, a book on a USB stick), but run
    classic scripts there. So on pages with a diagram we load Mermaid's
    self-contained build (``mermaid.min.js``, which sets ``window.mermaid``) as
    a deferred classic script and make the module read it from ``window``.
    Deferred scripts and modules run in document order, so it is defined in time.
    """
    from sphinx.errors import ExtensionError

    for index, script in enumerate(scripts):
        body = script.attributes.get("body") or ""
        if "import mermaid from" not in body:
            continue
        if not MERMAID_IMPORT.search(body):
            raise ExtensionError(
                "sphinxcontrib-mermaid's import line changed: update tools/vendor_assets.py"
            )
        del scripts[index]
        app.builder.add_js_file(
            app.config.mermaid_use_local, priority=script.priority, defer="defer"
        )
        body = MERMAID_IMPORT.sub("const mermaid = window.mermaid;", body, count=1)
        app.builder.add_js_file("", priority=script.priority, type="module", body=body)
        return


def point_widget_manager_at_its_fonts(app, context: dict, scripts: list) -> None:
    """Tell RequireJS where the widget manager lives, so that it finds its icon fonts.

    ``embed-amd.js`` looks for its fonts next to the URLs RequireJS gives two
    of its modules, ``@jupyter-widgets/html-manager`` and
    ``@jupyter-widgets/html-manager/dist/libembed-amd``; by default both are
    resolved against the page's own folder (404s). ``paths`` entries, set
    before the manager loads, put both in the vendored folder.
    """
    for index, script in enumerate(scripts):
        filename = str(script.filename or "")
        if not filename.endswith("/embed-amd.js"):
            continue
        folder = context["pathto"](posixpath.dirname(filename), 1)
        paths = json.dumps(
            {
                "@jupyter-widgets/html-manager": f"{folder}/embed-amd",
                "@jupyter-widgets/html-manager/dist": folder,
            }
        )
        del scripts[index]  # put it back after the configuration (same priority, kept in order)
        app.builder.add_js_file(
            "", priority=script.priority, body=f"require.config({{paths: {paths}}});"
        )
        scripts.append(script)
        return


# ipywidgets typesets its labels with MathJax 2's ``MathJax.Hub.Queue(["Typeset",
# MathJax.Hub, element])``; the book loads MathJax 3, which has no ``Hub`` (a
# TypeError on every page with a widget). This bridge gives MathJax 3 a ``Hub``
# whose ``Queue`` calls ``typesetPromise``, holding elements that arrive before
# MathJax has started. It runs before the deferred MathJax script.
MATHJAX2_HUB_BRIDGE = """(function () {
  const waiting = [];
  function typeset(element) {
    const mathjax = window.MathJax;
    if (mathjax && mathjax.typesetPromise) {
      mathjax.typesetPromise([element]).catch((error) => console.warn(error));
    } else {
      waiting.push(element);
    }
  }
  const hub = {Queue: (job) => { if (Array.isArray(job) && job[2]) typeset(job[2]); }};
  const config = window.MathJax || {};
  const startup = config.startup || {};
  startup.ready = function () {
    window.MathJax.startup.defaultReady();
    window.MathJax.Hub = hub;
    waiting.splice(0).forEach(typeset);
  };
  config.startup = startup;
  config.Hub = hub;
  window.MathJax = config;
})();"""


def bridge_widget_labels_to_mathjax3(app, scripts: list) -> None:
    """On pages with widgets, add :data:`MATHJAX2_HUB_BRIDGE` after MathJax's configuration."""
    if not any(str(script.filename or "").endswith("/embed-amd.js") for script in scripts):
        return
    config_index = next(
        (
            index
            for index, script in enumerate(scripts)
            if (script.attributes.get("body") or "").startswith("window.MathJax")
        ),
        None,
    )
    app.builder.add_js_file("", body=MATHJAX2_HUB_BRIDGE)
    bridge = scripts.pop()
    scripts.insert(0 if config_index is None else config_index + 1, bridge)


def drop_duplicate_inline_scripts(scripts: list) -> None:
    """Keep one copy of each inline script.

    Sphinx 7.4 lists an inline script that an extension adds once the builder
    exists twice (filename ``None`` and ``""``): sphinx-thebe's
    ``const THEBE_JS_URL = ...`` then runs twice, a SyntaxError on every page.
    """
    seen = set()
    kept = []
    for script in scripts:
        key = None if script.filename else tuple(sorted(script.attributes.items()))
        if key is None or key not in seen:
            kept.append(script)
        seen.add(key)
    scripts[:] = kept


def tidy_page_scripts(app, pagename, templatename, context, doctree) -> None:
    """Make every page's scripts load from disk, a classroom server or the web alike."""
    scripts = context.get("script_files")
    if scripts is None:
        return
    drop_duplicate_inline_scripts(scripts)
    load_mermaid_as_classic_script(app, context, scripts)
    point_widget_manager_at_its_fonts(app, context, scripts)
    bridge_widget_labels_to_mathjax3(app, scripts)


def setup(app):
    app.connect("config-inited", add_vendored_static_path)
    # After the handlers of sphinxcontrib-mermaid and myst-nb (priority 500).
    app.connect("html-page-context", tidy_page_scripts, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
