"""The built book in a real browser, with the network cut off.

A headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium) opens every page of the built book from a web server on 127.0.0.1,
with every other host unreachable, and checks what a reader sees:

- no JavaScript error in the console;
- every formula typeset by MathJax: no raw TeX left, no MathJax error;
- every mermaid diagram drawn as SVG;
- every image loaded, and every figure of a cell output at least 300 px wide;
- every saved ipywidgets view drawn (no empty widget area);
- notebook pages show at least as many figures as their code draws;
- no request leaves the machine;
- the search page finds Chinese words;
- pages opened from disk (file://, a book on a USB stick) render too.

It saves a full-page screenshot of every page in ``_build/screenshots/pages/``
and views of a few key pages in ``_build/screenshots/``: look at them.

Install the browser with ``apt-get install chromium chromium-driver``. Without
it these tests skip, except under CI (env CI set), where they fail. Like
``test_offline_html.py`` they read ``_build/html`` or MMLEARN_BOOK_HTML.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from test_offline_html import book_html, is_remote, pages

pytestmark = pytest.mark.book

WAIT_S = 30  # the longest one page may take to typeset and draw
MIN_FIGURE_PX = 300  # a figure narrower than this on a 1280 px window is too small to read
MAX_SCREENSHOT_PX = 16_000  # Chromium cannot capture taller pages in one picture
SEARCH_WORDS = ["注意力", "对比学习", "知识蒸馏"]
# page -> (screenshot name, the element to scroll into view)
KEY_PAGES = {
    "notebooks/ch04/self_attention.html": ("self_attention", "mjx-container[display='true']"),
    "notebooks/ch04/attention_maps.html": ("attention_maps", ".cell_output img"),
    "book/ch02/connections.html": ("connections", "pre.mermaid svg"),
}

# Waits until MathJax, Mermaid and the images are done, then reports what the
# reader sees. Runs in the page (execute_async_script); arguments = WAIT_S, MIN_FIGURE_PX.
RENDER_REPORT_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 1000 * arguments[0];
const minFigurePx = arguments[1];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const snippet = (text) => text.replace(/\s+/g, " ").trim().slice(0, 80);

async function settle() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const diagrams = [...document.querySelectorAll(".mermaid")];
  const pending = () => diagrams.filter(
    (d) => !d.querySelector("svg") && !d.hasAttribute("data-mermaid-deferred"));
  while (pending().length && Date.now() < deadline) await sleep(100);
  const images = [...document.images];
  images.forEach((img) => { img.loading = "eager"; });
  const loaded = (img) => img.complete ? Promise.resolve() : new Promise((resolve) => {
    img.addEventListener("load", resolve);
    img.addEventListener("error", resolve);
  });
  await Promise.race([Promise.all(images.map(loaded)), sleep(Math.max(0, deadline - Date.now()))]);
  // The widget manager draws each saved widget into a div.widget-subarea that it
  // inserts before the widget's <script> tag.
  const widgetScripts = [...document.querySelectorAll(
    "script[type='application/vnd.jupyter.widget-view+json']")];
  const widgetArea = (script) => {
    const area = script.previousElementSibling;
    return area && area.classList.contains("widget-subarea") ? area : null;
  };
  const undrawnWidgets = () => widgetScripts.filter((script) => {
    const area = widgetArea(script);
    return !area || !area.children.length;
  });
  while (undrawnWidgets().length && Date.now() < deadline) await sleep(100);

  const main = (document.querySelector("main") || document.body).cloneNode(true);
  main.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight")
    .forEach((element) => element.remove());
  const text = main.textContent;
  const rawTex = [];
  for (const match of text.matchAll(/\\\(|\\\[|\$\$/g)) {
    rawTex.push(snippet(text.slice(Math.max(0, match.index - 30), match.index + 50)));
  }
  const math = [...document.querySelectorAll(".math")];
  // MathJax draws an undefined macro (a typo such as \sofmax) as red text, not as an error.
  const mathErrors = [...document.querySelectorAll("mjx-merror, [data-mjx-error]")].map(
    (e) => e.getAttribute("data-mjx-error") || snippet(e.textContent));
  if (window.MathJax && MathJax.startup && MathJax.startup.document) {
    for (const item of MathJax.startup.document.math) {
      if (/<mtext[^>]*mathcolor="red"[^>]*>\\/.test(MathJax.startup.toMML(item.root))) {
        mathErrors.push("undefined macro in " + snippet(item.math));
      }
    }
  }
  return {
    math: math.length,
    mathjax: Boolean(window.MathJax && MathJax.startup),
    untypeset: math.filter((m) => !m.querySelector("mjx-container"))
      .map((m) => snippet(m.textContent)),
    mathErrors: mathErrors,
    rawTex: rawTex,
    diagrams: diagrams.length,
    undrawn: pending().map((d) => snippet(d.textContent)),
    diagramErrors: diagrams.filter((d) => d.querySelector("svg[aria-roledescription='error']")
      || /Syntax error/.test(d.textContent))
      .map((d) => snippet(d.getAttribute("data-original-code") || d.textContent)),
    brokenImages: images.filter((img) => !img.complete || img.naturalWidth === 0)
      .map((img) => img.getAttribute("src").slice(0, 120)),
    // A figure folded into a closed solution has no layout: judge it by its pixels.
    narrowFigures: [...document.querySelectorAll(".cell_output img")]
      .filter((img) => (img.getBoundingClientRect().width || img.naturalWidth) < minFigurePx)
      .map((img) => img.getAttribute("src").slice(0, 120) + " is "
        + Math.round(img.getBoundingClientRect().width || img.naturalWidth) + " px wide"),
    emptyWidgets: widgetScripts.filter((script) => {
      const area = widgetArea(script);
      return !area || !area.children.length || area.getBoundingClientRect().height === 0;
    }).map((script) => snippet(script.textContent)),
    figures: document.querySelectorAll(".cell_output img").length,
  };
}
settle().then(done, (error) => done({scriptError: [String(error)]}));
"""

SEARCH_RESULTS_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 1000 * arguments[0];
const poll = () => {
  const summary = document.querySelector("#search-results .search-summary");
  const results = [...document.querySelectorAll("#search-results ul.search > li a")];
  if ((summary && summary.textContent.trim()) || Date.now() > deadline) {
    done(results.map((a) => a.getAttribute("href")));
  } else {
    setTimeout(poll, 100);
  }
};
poll();
"""


def require_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver; skip (or, under CI, fail) without them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_found = False
    else:
        selenium_found = True
    missing = [
        name
        for name, found in [
            ("chromium", chromium),
            ("chromedriver", chromedriver),
            ("selenium", selenium_found),
        ]
        if not found
    ]
    if missing:
        message = (
            f"{', '.join(missing)} not found: apt-get install chromium chromium-driver "
            "(and pip install -r requirements.txt for selenium)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium, chromedriver


def chromium_flags(profile: Path, closed_port: int) -> list[str]:
    """Headless, a fresh profile, and no way out: every host but 127.0.0.1 is unknown,
    and any proxied request goes to a loopback port that refuses connections."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{closed_port}",
        "--proxy-bypass-list=127.0.0.1",
    ]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no line per request in the test output
        pass


@pytest.fixture(scope="module")
def html_dir() -> Path:
    return book_html()


@pytest.fixture(scope="module")
def server(html_dir):
    """The built book on http://127.0.0.1:<free port>."""
    handler = functools.partial(QuietHandler, directory=str(html_dir))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for all the checks, cut off from the network."""
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    closed = socket.socket()  # bound but never listening: connections are refused
    closed.bind(("127.0.0.1", 0))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in chromium_flags(tmp_path_factory.mktemp("chromium"), closed.getsockname()[1]):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S + 10)
    yield driver
    driver.quit()
    closed.close()


def console_errors(driver) -> list[str]:
    """SEVERE console entries since the last call. Chrome asks every site for
    /favicon.ico on its own; the 404 of that request is not the page's error."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]


def remote_requests(driver) -> list[str]:
    """URLs the browser tried to fetch from another host since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if is_remote(url) and not url.startswith("http://127.0.0.1:"):
                urls.append(url)
    return urls


def visit(driver, url: str) -> dict:
    """Open a page, wait until it has rendered, and report what a reader sees."""
    driver.get(url)
    report = driver.execute_async_script(RENDER_REPORT_JS, WAIT_S, MIN_FIGURE_PX)
    report["console"] = console_errors(driver)
    report["remote"] = remote_requests(driver)
    return report


def browsable_pages(html_dir: Path) -> list[str]:
    """Every page, except redirect stubs (the root index.html)."""
    found = []
    for page in pages(html_dir):
        head = page.read_text(encoding="utf-8")[:2000].lower()
        if 'http-equiv="refresh"' not in head and "reports" not in page.parts:
            found.append(page.relative_to(html_dir).as_posix())
    return found


def visit_or_report_failure(driver, url: str) -> dict:
    """visit(), but a page that hangs or crashes the browser becomes a finding, not the end."""
    from selenium.common.exceptions import WebDriverException

    try:
        return visit(driver, url)
    except WebDriverException as error:
        return {"scriptError": [f"{type(error).__name__}: {error.msg}"]}


def save_full_page(driver, path: Path) -> None:
    """A screenshot of the whole page, top to bottom (up to MAX_SCREENSHOT_PX), as a PNG.

    The window is made as tall as the page for the picture (as a reader scrolling
    down would see it) and restored afterwards. Chrome's own ``captureBeyondViewport``
    is not used: it laid many pages out shifted sideways, cutting the article off at
    the left edge, although the same pages in a normal window are not.
    """
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width = driver.execute_script("return window.innerWidth")
    height = int(min(size["height"], MAX_SCREENSHOT_PX))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        driver.execute_script("window.scrollTo(0, 0)")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def screenshot_name(page: str) -> str:
    """book/ch02/connections.html -> book__ch02__connections.png"""
    return page.removesuffix(".html").replace("/", "__") + ".png"


@pytest.fixture(scope="module")
def reports(browser, server, html_dir) -> dict[str, dict]:
    """What the reader sees on every page of the book, visited once; a full-page
    screenshot of each lands in _build/screenshots/pages/ for people to look at."""
    folder = html_dir.parent / "screenshots" / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for page in browsable_pages(html_dir):
        found[page] = visit_or_report_failure(browser, f"{server}/{page}")
        if "scriptError" not in found[page]:
            save_full_page(browser, folder / screenshot_name(page))
    return found


def failures(reports: dict[str, dict], key: str) -> str:
    found = {page: report[key] for page, report in reports.items() if report.get(key)}
    return "\n".join(f"{page}:\n  " + "\n  ".join(map(str, items)) for page, items in found.items())


def test_every_page_was_checked(reports, html_dir):
    assert reports, f"no pages under {html_dir}"
    errors = failures(reports, "scriptError")
    assert not errors, f"the check itself failed on:\n{errors}"


def test_no_javascript_errors(reports):
    errors = failures(reports, "console")
    assert not errors, f"console errors:\n{errors}"


def test_every_formula_is_typeset(reports):
    for page, report in reports.items():
        assert not report.get("math") or report["mathjax"], f"{page}: MathJax did not load"
    for key, what in [
        ("untypeset", "formulas MathJax left alone"),
        ("mathErrors", "TeX errors"),
        ("rawTex", "raw TeX in the text"),
    ]:
        errors = failures(reports, key)
        assert not errors, f"{what}:\n{errors}"


def test_every_diagram_is_drawn(reports):
    for key, what in [("undrawn", "diagrams not drawn"), ("diagramErrors", "diagram errors")]:
        errors = failures(reports, key)
        assert not errors, f"mermaid {what}:\n{errors}"


def test_every_image_loads(reports):
    errors = failures(reports, "brokenImages")
    assert not errors, f"images that did not load:\n{errors}"


def test_every_figure_is_wide_enough_to_read(reports):
    errors = failures(reports, "narrowFigures")
    assert not errors, f"figures narrower than {MIN_FIGURE_PX} px on a 1280 px page:\n{errors}"


def test_every_widget_is_drawn(reports):
    errors = failures(reports, "emptyWidgets")
    assert not errors, f"widget areas left empty:\n{errors}"


def test_notebook_pages_show_their_figures(reports):
    """The browser's side of test_book_build's count: pages of notebooks that draw show pictures."""
    import nbformat
    from test_book_build import ROOT, show_calls

    for notebook in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        page = notebook.relative_to(ROOT).with_suffix(".html").as_posix()
        drawn = show_calls(nbformat.read(notebook, as_version=4))
        if drawn and page in reports:
            assert reports[page].get("figures", 0) >= drawn, (
                f"{page}: draws {drawn} figures, the browser shows {reports[page].get('figures')}"
            )


def test_a_full_page_screenshot_of_every_page(reports, html_dir):
    folder = html_dir.parent / "screenshots" / "pages"
    missing = [page for page in reports if not (folder / screenshot_name(page)).exists()]
    assert not missing, f"pages without a screenshot: {missing}"
    small = [page for page in reports if (folder / screenshot_name(page)).stat().st_size < 10_000]
    assert not small, f"screenshots that look blank: {small}"
    cut = [page for page in reports if ink_at_left_edge(folder / screenshot_name(page)) > 0.001]
    assert not cut, f"screenshots with text cut off at the left edge: {cut}"


def ink_at_left_edge(path: Path) -> float:
    """The share of dark pixels in the leftmost 8 px below the header: the page's margin
    there is blank unless the picture shows the page shifted sideways."""
    from PIL import Image

    with Image.open(path) as image:
        gray = image.convert("L")
        strip = gray.crop((0, 70, 8, min(gray.height, 3000)))
        pixels = list(strip.getdata())
    return sum(value < 128 for value in pixels) / max(len(pixels), 1)


def test_ink_at_left_edge_tells_a_shifted_picture(tmp_path):
    from PIL import Image, ImageDraw

    for shift, cut in ((0, False), (-40, True)):  # a black block 20 px in, or pushed past x = 0
        image = Image.new("RGB", (200, 400), "white")
        ImageDraw.Draw(image).rectangle((20 + shift, 100, 120 + shift, 300), fill="black")
        image.save(tmp_path / "page.png")
        assert (ink_at_left_edge(tmp_path / "page.png") > 0.001) == cut


def test_no_request_leaves_the_machine(reports):
    errors = failures(reports, "remote")
    assert not errors, f"requests to other hosts:\n{errors}"


def search(browser, base: str, word: str) -> list[str]:
    browser.get(f"{base}/search.html?q={quote(word)}")
    return browser.execute_async_script(SEARCH_RESULTS_JS, WAIT_S)


@pytest.mark.parametrize("word", SEARCH_WORDS)
def test_chinese_search_finds_pages(browser, server, html_dir, word):
    results = search(browser, server, word)
    assert results, f"searching for {word} found nothing: is jieba installed for the build?"
    for href in results:
        page = href.split("#")[0].split("?")[0]
        assert (html_dir / page).exists(), f"search result {href} is not a page of the book"
    assert not console_errors(browser)


def test_pages_render_when_opened_from_disk(browser, html_dir):
    """A zipped book opened from a USB stick: file:// URLs, no web server."""
    checked = []
    for page in ["book/ch02/connections.html", "notebooks/ch04/self_attention.html"]:
        if not (html_dir / page).exists():
            continue
        report = visit(browser, (html_dir / page).resolve().as_uri())
        for key in ["console", "untypeset", "rawTex", "undrawn", "brokenImages", "remote"]:
            assert not report[key], f"{page} from disk, {key}: {report[key]}"
        checked.append(page)
    if not checked:
        pytest.skip("neither key page is in this build")


def test_screenshots_of_key_pages(browser, server, html_dir):
    """Pictures of a formula, an attention map and the mermaid diagram, for people to look at."""
    folder = html_dir.parent / "screenshots"
    folder.mkdir(exist_ok=True)
    saved = []
    for page, (name, selector) in KEY_PAGES.items():
        if not (html_dir / page).exists():
            if os.environ.get("MMLEARN_BOOK_BUILT") == "1":
                pytest.fail(f"{page} is missing from the book")
            continue
        visit(browser, f"{server}/{page}")
        browser.execute_script(
            "const e = document.querySelector(arguments[0]);"
            "if (e) e.scrollIntoView({block: 'center'});",
            selector,
        )
        path = folder / f"{name}.png"
        assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
        saved.append(path)
    search(browser, server, SEARCH_WORDS[0])
    assert browser.save_screenshot(str(folder / "search.png"))
    assert saved, "none of the key pages is in this build"
