"""The rendered book: every chapter page, every figure it references, no cell error; and a
check in headless Chromium that every page renders with its figures, with a full-page screenshot
of each saved under the build folder (_build/test-book/screenshots/) for a person to look at."""

import html.parser
import os
from pathlib import Path

import nbformat
import yaml

from tests.browser import headless_chromium, needs_chromium

REPO = Path(__file__).resolve().parents[2]


class _Refs(html.parser.HTMLParser):
    """Collects the src of every <img> on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images += [v for k, v in attrs if k == "src" and v]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_toc_page_is_rendered_with_its_figures(smoke_book):
    html_dir = smoke_book["html"]
    assert (html_dir / "index.html").exists()
    for page in _toc_files():
        path = html_dir / f"{page}.html"
        assert path.exists(), f"{page} missing from the book"
        refs = _Refs()
        refs.feed(path.read_text())
        for src in refs.images:
            if src.startswith(("http:", "https:", "data:")):
                continue
            assert (path.parent / src).resolve().exists(), f"{page} references a missing figure {src}"
        if page.startswith("notebooks/") and page not in ("notebooks/00_problems", "notebooks/07_findings"):
            assert refs.images, f"{page} has no figure"


def test_executed_notebooks_have_no_cell_error(smoke_book):
    for nb_path in sorted(smoke_book["executed"].glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{nb_path.name}: {out.get('ename')}"


def test_pages_show_no_trainer_tables_nor_local_paths(smoke_book):
    """The trainer's per-run Step | Training Loss tables and a `save_results` path echoed as a
    cell's value are noise in a published page (issue 14.5)."""
    runs = os.environ["WSG_RUNS"]
    for nb_path in sorted(smoke_book["executed"].glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                shown = data.get("text/html", "") + data.get("text/plain", "") + out.get("text", "")
                assert "Training Loss" not in shown, f"{nb_path.name}: a trainer progress table in the page"
                assert runs not in shown and "PosixPath(" not in shown, f"{nb_path.name}: a local path shown"


def test_bibliography_resolves_every_citation(smoke_book):
    text = (smoke_book["html"] / "book" / "bibliography.html").read_text().lower()
    for title in (
        "direct preference optimization",
        "similarity of neural network representations",
        "repurposing negative samples",
        "linear mode connectivity",
    ):
        assert title in text
    intro = (smoke_book["html"] / "book" / "intro.html").read_text()
    assert "nikolich2026geometry" not in intro, "an unresolved citation key is shown as text"


@needs_chromium
def test_pages_render_in_headless_chromium(smoke_book):
    from selenium.webdriver.support.ui import WebDriverWait

    shots = smoke_book["html"].parent / "screenshots"
    shots.mkdir(exist_ok=True)
    driver = headless_chromium()
    try:
        for page in ["index", *_toc_files()]:
            driver.set_window_size(1280, 1600)
            driver.get((smoke_book["html"] / f"{page}.html").as_uri())
            if page == "index":  # jupyter-book's index redirects to the landing page
                WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("book/intro.html"))
            WebDriverWait(driver, 20).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            title = driver.execute_script(
                "const h = document.querySelector('article h1'); return h && h.textContent"
            )
            assert title, f"{page}: no heading rendered"
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0])"
            )
            broken = [src for src, ok in images if not ok]
            assert not broken, f"{page}: figures that did not load: {broken}"
            if page.startswith("notebooks/") and page not in (
                "notebooks/00_problems",
                "notebooks/07_findings",
            ):
                assert images, f"{page}: no figures"
            # the whole page in one picture (capped: Chromium cannot draw taller than 16384 px)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1280, min(max(height, 1600), 16000))
            shot = shots / f"{page.replace('/', '_')}.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
