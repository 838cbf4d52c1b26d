"""LowRankDelta and load_deltas against PEFT's own merged weights on a tiny Qwen3."""

import json

import pytest
import torch

from helpers.deltas import (
    AdapterError,
    LowRankDelta,
    adapter_base_model,
    check_compatible,
    check_same_base,
    load_deltas,
    parse_module,
)
from tests.builders import LORA_TARGETS, make_adapter, make_model


def save_adapter(path, seed=1, base_name=None, hidden=32, **lora_kwargs):
    """A PEFT adapter with a nonzero lora_B; returns (base weights, merged weights) by module."""
    base = make_model(64, hidden_size=hidden, tie_word_embeddings=False)
    if base_name:
        base.config.name_or_path = base_name
    before = {
        n: m.weight.detach().clone() for n, m in base.named_modules() if n.split(".")[-1] in LORA_TARGETS
    }
    peft_model = make_adapter(base, seed=seed, scale=0.1, **lora_kwargs)
    peft_model.save_pretrained(path)
    if base_name:  # PEFT records the base from the model's config; make sure it is written
        cfg_path = path / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(cfg))
    merged = peft_model.merge_and_unload()
    after = {n: m.weight.detach().clone() for n, m in merged.named_modules() if n in before}
    return before, after


def test_load_matches_peft_merge(tmp_path):
    before, after = save_adapter(tmp_path / "a")
    deltas = load_deltas(tmp_path / "a")
    assert set(deltas) == set(before) and len(deltas) == 8
    assert list(deltas)[0].startswith("model.layers.0.")
    for name, delta in deltas.items():
        assert delta.B.dtype == torch.float64
        assert delta.scale == 2.0 and delta.rank == 4
        assert delta.module == name and delta.projection == name.split(".")[-1]
        assert delta.layer == int(name.split(".")[2])
        expected = (after[name] - before[name]).double()
        assert delta.shape == tuple(expected.shape)
        assert float(delta.dense().abs().max()) > 1e-3  # the update is really nonzero
        torch.testing.assert_close(delta.dense(), expected, atol=1e-6, rtol=1e-5)


def test_load_bin_weights(tmp_path):
    from safetensors.torch import load_file

    before, after = save_adapter(tmp_path / "a")
    safetensors = tmp_path / "a" / "adapter_model.safetensors"
    torch.save(load_file(str(safetensors)), tmp_path / "a" / "adapter_model.bin")
    safetensors.unlink()
    for name, delta in load_deltas(tmp_path / "a").items():
        torch.testing.assert_close(delta.dense(), (after[name] - before[name]).double(), atol=1e-6, rtol=1e-5)


def test_rslora_scale(tmp_path):
    before, after = save_adapter(tmp_path / "a", use_rslora=True)
    deltas = load_deltas(tmp_path / "a")
    for name, delta in deltas.items():
        assert delta.scale == pytest.approx(8 / 2.0)  # alpha / sqrt(r) = 8 / sqrt(4)
        torch.testing.assert_close(delta.dense(), (after[name] - before[name]).double(), atol=1e-6, rtol=1e-5)


def test_rank_and_alpha_patterns(tmp_path):
    before, after = save_adapter(tmp_path / "a", rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 32})
    deltas = load_deltas(tmp_path / "a")
    for name, delta in deltas.items():
        proj = delta.projection
        assert delta.rank == (2 if proj == "q_proj" else 4)
        assert delta.scale == {"q_proj": 8 / 2, "v_proj": 32 / 4}.get(proj, 2.0)
        torch.testing.assert_close(delta.dense(), (after[name] - before[name]).double(), atol=1e-6, rtol=1e-5)


def test_frobenius_norm_on_factors():
    gen = torch.Generator().manual_seed(0)
    B, A = (
        torch.randn(7, 3, generator=gen, dtype=torch.float64),
        torch.randn(3, 5, generator=gen, dtype=torch.float64),
    )
    delta = LowRankDelta(B, A, scale=-1.5)
    assert delta.shape == (7, 5) and delta.rank == 3
    assert delta.frobenius_norm() == pytest.approx(float(torch.linalg.norm(delta.dense())), rel=1e-12)


def test_parse_module():
    assert parse_module("model.layers.12.self_attn.o_proj") == (12, "o_proj")
    assert parse_module("transformer.h.3.attn.c_attn") == (3, "c_attn")
    assert parse_module("lm_head") == (None, "lm_head")


def test_bad_factor_shapes():
    with pytest.raises(AdapterError, match="not d_out x r"):
        LowRankDelta(torch.zeros(4, 3), torch.zeros(2, 5))


def test_not_an_adapter(tmp_path):
    with pytest.raises(AdapterError, match="not a folder"):
        load_deltas(tmp_path / "missing")
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        load_deltas(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(AdapterError, match="no adapter weights"):
        load_deltas(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="only LORA"):
        load_deltas(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        load_deltas(tmp_path)


def test_weights_without_lora_tensors(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    save_file(
        {"base_model.model.lm_head.weight": torch.zeros(2, 2)}, str(tmp_path / "adapter_model.safetensors")
    )
    with pytest.raises(AdapterError, match="no lora_A / lora_B"):
        load_deltas(tmp_path)
    save_file(
        {"base_model.model.x.lora_A.weight": torch.zeros(4, 2)}, str(tmp_path / "adapter_model.safetensors")
    )
    with pytest.raises(AdapterError, match="not both"):
        load_deltas(tmp_path)


def test_incompatible_adapters(tmp_path):
    save_adapter(tmp_path / "a")
    save_adapter(tmp_path / "qk", target_modules=["q_proj", "k_proj"])
    save_adapter(tmp_path / "wide", hidden=48)
    a = load_deltas(tmp_path / "a")
    check_compatible(a, load_deltas(tmp_path / "a"))
    with pytest.raises(AdapterError, match="different modules"):
        check_compatible(a, load_deltas(tmp_path / "qk"), "a", "qk")
    with pytest.raises(AdapterError, match="differ in shape"):
        check_compatible(a, load_deltas(tmp_path / "wide"))


def test_different_base_models(tmp_path):
    save_adapter(tmp_path / "x", base_name="org/model-x")
    save_adapter(tmp_path / "y", base_name="org/model-y")
    save_adapter(tmp_path / "none")
    assert adapter_base_model(tmp_path / "x") == "org/model-x"
    assert adapter_base_model(tmp_path / "none") is None
    assert check_same_base([tmp_path / "x", tmp_path / "none"]) == "org/model-x"
    with pytest.raises(AdapterError, match="different base models"):
        check_same_base([tmp_path / "x", tmp_path / "y"])
