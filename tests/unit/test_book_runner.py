"""The book runner: the rendered copy shows the parameters that were used, once."""

import nbformat

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
