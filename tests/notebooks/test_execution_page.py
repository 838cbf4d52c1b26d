"""The rendered book: an execution page from the run's record, a download of each executed notebook,
and no repository link the project does not have (issue 14 items 3 and 7)."""

import json

import nbformat

from helpers import execution
from helpers.book import notebooks, repository_url


def test_the_execution_page_is_written_from_the_run_record(smoke_book):
    record = json.loads((smoke_book["executed"] / execution.RECORD).read_text())
    text = (smoke_book["html"] / "book" / "execution.html").read_text()
    assert (
        record["profile"] == "smoke"
        and '<code class="docutils literal notranslate"><span class="pre">smoke' in text
    )
    for nb in notebooks():
        assert nb.stem in record["chapters"] and nb.stem in text
    if record["commit"]["sha"]:
        assert record["commit"]["sha"][:12] in text
    assert record["libraries"]["torch"] in text and record["machine"]["cpu"] in text


def test_each_chapter_offers_its_executed_notebook_for_download(smoke_book):
    html = smoke_book["html"]
    for nb in notebooks():
        page = (html / "notebooks" / f"{nb.stem}.html").read_text()
        assert f"_sources/notebooks/{nb.stem}.ipynb" in page and "download-source-button" in page
        served = nbformat.read(html / "_sources" / "notebooks" / f"{nb.stem}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in served.cells if c.cell_type == "code")  # executed, not blank


def test_no_page_links_a_made_up_repository(smoke_book):
    url = repository_url()
    for page in smoke_book["html"].rglob("*.html"):
        text = page.read_text()
        assert "github.com/wsg-offline" not in text and "executablebooks/jupyter-book" not in text, page
        if url is None:
            assert "repository-button" not in text, page
