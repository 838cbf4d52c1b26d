"""The book runner: the rendered copy shows the parameters that were used, once."""

import nbformat
import pytest

from helpers.book import _show_only_the_parameters_used, notebooks
from helpers.lr_sweep import protocol_hash
from helpers.profiles import load_profile


def test_default_parameters_are_hidden_when_papermill_injected_values(tmp_path):
    nb = nbformat.v4.new_notebook()
    default = nbformat.v4.new_code_cell('PROFILE = "tiny"', metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell('PROFILE = "smoke"', metadata={"tags": ["injected-parameters"]})
    nb.cells = [default, injected]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    _show_only_the_parameters_used(path)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].metadata["tags"] == ["parameters", "remove-cell"]
    assert cells[1].metadata["tags"] == ["injected-parameters"]


def test_notebooks_are_found_in_order():
    names = [p.stem for p in notebooks()]
    assert names == sorted(names) and names[0] == "00_problems"


def test_lr_sweep_protocol_ignores_the_rates_but_not_the_protocol():
    import dataclasses

    tiny = load_profile("tiny")
    other_rate = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, lr=0.123))
    other_steps = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, steps=7))
    assert protocol_hash(other_rate) == protocol_hash(tiny) != protocol_hash(other_steps)


def _git(cwd, *args):
    import subprocess

    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_the_repository_url_comes_from_the_git_remote_or_is_left_out(tmp_path):
    from helpers.book import repository_url

    _git(tmp_path, "init", "-q")
    assert repository_url(tmp_path) is None
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/wsg.git")
    assert repository_url(tmp_path) == "https://github.com/someone/wsg"
    _git(tmp_path, "remote", "set-url", "origin", "/srv/git/wsg.git")
    assert repository_url(tmp_path) is None  # a local path is no address for a reader


def test_the_config_names_no_repository_and_the_assembled_book_only_a_real_one(tmp_path, monkeypatch):
    import yaml

    from helpers import book, execution

    committed = yaml.safe_load((book.REPO_ROOT / "_config.yml").read_text())
    assert not committed.get("repository", {}).get("url")
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), executed / "00_problems.ipynb")
    for url in (None, "https://example.org/wsg"):
        monkeypatch.setattr(book, "repository_url", lambda url=url: url)
        src = book.assemble(executed, tmp_path / "src")
        config = yaml.safe_load((src / "_config.yml").read_text())
        assert config["repository"]["url"] == (url or "")  # blank: not jupyter-book's own default
        assert config["html"]["use_repository_button"] is bool(url)
    # the execution page of the assembled book is the one written from the (absent) record
    assert (src / execution.PAGE).read_text() == execution.page(None)
    assert "file: book/execution" in (book.REPO_ROOT / "_toc.yml").read_text()


def test_the_book_eta_adds_the_chapters_still_to_run_from_the_last_record():
    from helpers.book import book_eta

    previous = {"chapters": {"00": {"seconds": 10.0}, "01": {"seconds": 20.0}, "02": {"seconds": 30.0}}}
    assert book_eta(previous, ["00", "01", "02"], "01", 5.0) == 45.0
    assert book_eta(previous, ["00", "01", "02"], "01", 25.0) == 30.0  # overdue: not negative
    assert book_eta({"chapters": {"00": {"seconds": 1.0}}}, ["00", "01"], "00", 0.0) is None
    assert book_eta(None, ["00"], "00", 0.0) is None


def test_execute_runs_kernels_over_ipc_and_sends_progress_to_the_terminal_not_the_page(
    tmp_path, monkeypatch, capfd
):
    """No "Kernel is running over TCP without encryption" warning, a bar inside the notebook reaches
    this terminal through the side channel, the executed notebook holds no trace of it, and the
    run is recorded."""
    import functools
    import json

    from helpers import book, execution, progress

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    nb.cells = [
        nbformat.v4.new_code_cell('PROFILE = "tiny"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from helpers.progress import tqdm\nfor _ in tqdm(range(3), desc='pretrain base', unit='step'):\n"
            "    pass\nprint('done')"
        ),
    ]
    notebooks_dir = tmp_path / "notebooks"
    notebooks_dir.mkdir()
    nbformat.write(nb, notebooks_dir / "00_demo.ipynb")
    monkeypatch.setattr(book, "NOTEBOOK_DIR", notebooks_dir)
    monkeypatch.setenv("PYTHONPATH", str(book.REPO_ROOT))
    monkeypatch.setattr(
        progress.Monitor, "__init__", functools.partialmethod(progress.Monitor.__init__, min_seconds=0.0)
    )
    out_dir = tmp_path / "executed"
    timings = book.execute("smoke", out_dir)
    terminal = capfd.readouterr()
    assert "without encryption" not in terminal.out + terminal.err
    assert "[book]   pretrain base 3/3 step" in terminal.out
    outputs = nbformat.read(out_dir / "00_demo.ipynb", as_version=4).cells[-1].outputs
    assert [o.get("text") for o in outputs] == ["done\n"]  # no bar on the page
    record = json.loads((out_dir / execution.RECORD).read_text())
    assert record["profile"] == "smoke" and set(record["chapters"]) == set(timings) == {"00_demo"}
    assert (
        not (out_dir / ".progress.jsonl").exists() and progress.PROGRESS_ENV not in __import__("os").environ
    )


def test_a_failed_copy_is_kept_until_the_notebook_runs_through(tmp_path, monkeypatch):
    """A failing chapter leaves `<stem>.failed.ipynb` to look at; once it runs, the stale copy is
    gone, so no later check mistakes an old failure for this run's."""
    from helpers import book

    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    nb.cells = [
        nbformat.v4.new_code_cell('PROFILE = "tiny"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nassert not os.environ.get('WSG_DEMO_FAIL'), 'planted failure'"),
    ]
    notebooks_dir = tmp_path / "notebooks"
    notebooks_dir.mkdir()
    nbformat.write(nb, notebooks_dir / "00_demo.ipynb")
    monkeypatch.setattr(book, "NOTEBOOK_DIR", notebooks_dir)
    monkeypatch.setenv("PYTHONPATH", str(book.REPO_ROOT))
    out_dir = tmp_path / "executed"
    monkeypatch.setenv("WSG_DEMO_FAIL", "1")
    with pytest.raises(Exception, match="planted failure"):
        book.execute("smoke", out_dir)
    assert (out_dir / "00_demo.failed.ipynb").exists() and not (out_dir / "00_demo.ipynb").exists()
    monkeypatch.delenv("WSG_DEMO_FAIL")
    book.execute("smoke", out_dir)
    assert sorted(p.name for p in out_dir.glob("*.ipynb")) == ["00_demo.ipynb"]
