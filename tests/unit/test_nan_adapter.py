"""An adapter with NaN or inf weights is named, with its module, before any linear algebra runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from helpers.deltas import AdapterError, load_deltas
from helpers.geometry import main

MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def write_adapter(folder, seed, poison=None, value=float("nan")):
    """A PEFT-layout adapter (r = 2); with `poison` = (module, side), one entry of that factor is `value`."""
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in MODULES:
        for side, shape in (("A", (2, 8)), ("B", (8, 2))):
            t = torch.randn(*shape, generator=gen)
            if poison == (name, side):
                t[1, 1] = value
            tensors[f"base_model.model.{name}.lora_{side}.weight"] = t
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "base_model_name_or_path": "org/base"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("side,value", [("B", float("nan")), ("A", float("inf")), ("B", float("-inf"))])
def test_load_deltas_names_the_adapter_and_the_module(tmp_path, side, value):
    bad_module = MODULES[2]
    folder = write_adapter(tmp_path / "diverged", 1, (bad_module, side), value)
    with pytest.raises(AdapterError) as err:
        load_deltas(folder)
    assert str(folder) in str(err.value) and bad_module in str(err.value) and f"lora_{side}" in str(err.value)


def test_cli_prints_one_error_line_for_a_nan_adapter(tmp_path, capsys):
    good = write_adapter(tmp_path / "good", 1)
    bad = write_adapter(tmp_path / "bad", 2, (MODULES[1], "B"))
    assert main([str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(bad) in lines[0] and MODULES[1] in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
