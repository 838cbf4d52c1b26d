"""The forward KL from the base to an adapted model against a direct computation on full logits."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from helpers import function_space
from helpers.function_space import ForwardKL, FunctionSpaceError, forward_kl, forward_kl_by_adapter, token_kl
from tests.builders import make_adapter, make_model, make_tokenizer, save_base


def sequences(tokenizer) -> list[tuple[list[int], list[int]]]:
    """Three (prompt, completion) id pairs of different lengths, so batches are padded."""
    pairs = [
        ("Question: Tom has 3 apples and buys 4 more.\nAnswer:", " Tom has 3 + 4 = 7 apples.\n#### 7"),
        ("Question: A box holds 12 pens.\nAnswer:", " 5 * 12 = 60\n#### 60"),
        ("Question: Sara reads 9 pages a day. How many pages in 6 days?\nAnswer:", " 54"),
    ]
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [(enc(p), enc(c) + [tokenizer.eos_token_id]) for p, c in pairs]


def direct(model, seqs, reverse: bool = False) -> list[float]:
    """Per-sequence sum over completion positions of the exact KL, from full logits, one row at a time."""
    out = []
    for prompt, completion in seqs:
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            adapted = model(input_ids=ids).logits[0, :-1]
            with model.disable_adapter():
                base = model(input_ids=ids).logits[0, :-1]
        p, q = (adapted, base) if reverse else (base, adapted)
        logp, logq = torch.log_softmax(p, -1), torch.log_softmax(q, -1)
        kl = (logp.exp() * (logp - logq)).sum(-1)
        out.append(kl[len(prompt) - 1 :].sum().item())  # positions that predict completion tokens
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def test_matches_direct_computation_and_is_the_forward_direction(tokenizer) -> None:
    base = make_model(len(tokenizer), seed=4)
    with torch.no_grad():  # peakier next-token distributions, so KL is far from symmetric
        base.get_output_embeddings().weight.mul_(6.0)
    model = make_adapter(base, seed=2, scale=0.3)
    seqs = sequences(tokenizer)
    got = forward_kl(model, seqs, tokenizer.pad_token_id, batch_size=2, chunk_tokens=5)  # padding and chunks
    expected = direct(model, seqs)
    torch.testing.assert_close(torch.tensor(got.per_sequence), torch.tensor(expected), rtol=1e-4, atol=1e-6)
    assert got.tokens == [len(c) for _, c in seqs]
    assert min(got.per_sequence) > 0
    assert got.per_token == pytest.approx(sum(expected) / sum(got.tokens), rel=1e-4)
    assert got.per_completion == pytest.approx(sum(expected) / 3, rel=1e-4)
    # KL is not symmetric here, so swapping base and adapted would fail the comparison above
    reverse = direct(model, seqs, reverse=True)
    assert max(abs(a - b) / b for a, b in zip(reverse, expected, strict=True)) > 0.05


def test_kl_of_a_model_with_itself_is_zero(tokenizer) -> None:
    model = get_peft_model(
        make_model(len(tokenizer), seed=5), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    got = forward_kl(model, sequences(tokenizer), tokenizer.pad_token_id)  # lora_B = 0: adapted == base
    assert got.per_sequence == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_token_kl_is_nonnegative_and_zero_only_on_equal_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 30, generator=gen), torch.randn(50, 30, generator=gen)
    assert torch.all(token_kl(a, b) > 0)
    torch.testing.assert_close(token_kl(a, a + 3.0), torch.zeros(50), atol=1e-5, rtol=0)  # shift-invariant
    p = torch.softmax(a, -1)
    torch.testing.assert_close(token_kl(a, b), (p * (p.log() - torch.log_softmax(b, -1))).sum(-1))


def test_base_samples_come_from_the_base(tokenizer) -> None:
    bare = make_model(len(tokenizer), seed=6)
    bare.generation_config.pad_token_id = tokenizer.pad_token_id
    prompts = ["Question: Tom has 3 apples.\nAnswer:", "Question: A box holds 12 pens.\nAnswer:"]
    from helpers.rollouts import sample_completions

    expected = sample_completions(bare, tokenizer, prompts, 2, 1.0, 1.0, 6, 4, seed=3, return_ids=True)
    adapted = make_adapter(bare, seed=1, scale=2.0)  # large enough to change what is sampled
    got = function_space.sample_base_completions(adapted, tokenizer, prompts, 2, 6, 4, seed=3)
    assert [c for _, c in got] == [ids for _, _, ids in expected]
    assert [p for p, _ in got] == [
        tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in "ab"
    ]
    on = sample_completions(adapted, tokenizer, prompts, 2, 1.0, 1.0, 6, 4, seed=3, return_ids=True)
    assert [ids for _, _, ids in on] != [c for _, c in got]  # the adapter would have changed them


def test_by_adapter_loads_the_base_once_and_matches(tmp_path, tokenizer) -> None:
    base_dir = save_base(tmp_path / "base")
    from transformers import AutoModelForCausalLM

    seqs = sequences(tokenizer)
    expected = {}
    for name, seed in (("a", 1), ("b", 2)):
        model = make_adapter(AutoModelForCausalLM.from_pretrained(base_dir), seed=seed, scale=0.3)
        model.save_pretrained(tmp_path / name)
        expected[name] = forward_kl(model, seqs, tokenizer.pad_token_id).per_sequence
    got = forward_kl_by_adapter(base_dir, {"a": tmp_path / "a", "b": tmp_path / "b"}, seqs)
    for name in expected:
        torch.testing.assert_close(torch.tensor(got[name].per_sequence), torch.tensor(expected[name]))
    assert got["a"].per_sequence != got["b"].per_sequence
    with pytest.raises(FunctionSpaceError, match="no adapter_config.json"):
        forward_kl_by_adapter(base_dir, {"x": tmp_path}, seqs)


def test_bad_inputs(tokenizer) -> None:
    with pytest.raises(FunctionSpaceError, match="peft model"):
        forward_kl(make_model(len(tokenizer)), sequences(tokenizer), 0)
    model = make_adapter(make_model(len(tokenizer)))
    with pytest.raises(FunctionSpaceError, match="empty at rows \\[1\\]"):
        forward_kl(model, [([1, 2], [3]), ([4], [])], 0)
    assert ForwardKL([1.0, 3.0], [2, 2]).to_dict()["per_token"] == 1.0
