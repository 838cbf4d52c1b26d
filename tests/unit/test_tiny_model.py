"""The tiny tokenizer and Qwen3 model: round trips, size, and pretraining that learns."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.problems import generate_problems, problem_corpus
from helpers.profiles import load_profile
from helpers.tiny_model import build_model, count_parameters, pretrain, save_model, train_tokenizer


def _corpus(n=200):
    return problem_corpus(generate_problems(n, seed=3))


def test_tokenizer_round_trips_text_and_knows_eos():
    texts = _corpus()
    tok = train_tokenizer(texts, vocab_size=300)
    assert len(tok) <= 300 and tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    for text in texts[:20] + ["Unseen words: zebra 12,345 $7 ü"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_tiny_profile_model_has_about_a_million_parameters():
    model = build_model(load_profile("tiny").model, vocab_size=512)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert 0.5e6 < count_parameters(model) < 1.5e6


def test_save_and_reload_with_auto_classes(tmp_path):
    texts = _corpus(50)
    tok = train_tokenizer(texts, vocab_size=300)
    model = build_model(load_profile("smoke").model, len(tok), seed=1).eval()
    save_model(model, tok, tmp_path / "m")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = tok(texts[0], return_tensors="pt")["input_ids"]
    assert tok2(texts[0], return_tensors="pt")["input_ids"].equal(ids)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model2(ids).logits, atol=1e-6)
    assert model2.config.eos_token_id == tok.eos_token_id


def test_pretraining_lowers_the_loss_and_is_seeded():
    texts = _corpus(100)
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = load_profile("smoke").model
    logs = []
    for _ in range(2):
        model = build_model(cfg, len(tok), seed=0)
        logs.append(pretrain(model, tok, texts, steps=20, batch_size=8, lr=3e-3, max_length=128, seed=0))
    assert logs[0].loss == logs[1].loss  # same seed, same numbers
    assert logs[0].loss[-1] < 0.85 * math.log(len(tok))  # well below a uniform guess
    assert logs[0].tokens > 0 and logs[0].tokens_per_second > 0


def test_length_grouped_batches_spare_padding_and_draw_every_example():
    from helpers.tiny_model import length_grouped_batches

    lengths = [int(n) for n in torch.randint(20, 200, (1000,), generator=torch.Generator().manual_seed(0))]
    batches = length_grouped_batches(lengths, 32, 165, torch.Generator().manual_seed(1))
    assert len(batches) == 165 and all(len(b) == 32 for b in batches)
    padded = sum(32 * max(lengths[i] for i in b) for b in batches)
    assert sum(lengths[i] for b in batches for i in b) / padded > 0.9  # random batches: about 0.6
    drawn = torch.bincount(torch.tensor([i for b in batches for i in b]), minlength=1000)
    assert (drawn > 0).float().mean() > 0.99  # 5.3 draws per example on average: all are drawn
    # Lengths do not rise from batch to batch: the groups are shuffled.
    widths = [max(lengths[i] for i in b) for b in batches[:16]]
    assert widths != sorted(widths)
    again = length_grouped_batches(lengths, 32, 165, torch.Generator().manual_seed(1))
    assert again == batches


def test_learning_rate_warms_up_then_anneals():
    from helpers.tiny_model import lr_factor

    factors = [lr_factor(s, 100) for s in range(101)]  # the scheduler's final call is step 100
    assert factors[0] == pytest.approx(0.2) and factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[-1] == pytest.approx(0.05)


def test_student_is_picked_by_measured_accuracy():
    from helpers.base_models import select_student

    curve = {100: {"greedy": 0.1}, 200: {"greedy": 0.6}, 300: {"greedy": 0.4}, 400: {"greedy": 0.9}}
    assert select_student(curve, 400, 100, 0.5)[0] == 200
    assert select_student(curve, 400, 250, 0.5)[0] == 300  # none from 250 on reaches 0.5: the best
    step, why = select_student(curve, 400, 100, 0.95)
    assert step == 200 and "no checkpoint reached" in why  # the best before the teacher's step
    assert select_student(curve, 400, 300, 0.0)[0] == 300
    with pytest.raises(ValueError, match="no checkpoint"):
        select_student(curve, 100, 100, 0.5)


def test_a_prompt_completion_pair_trains_on_the_completion_only():
    from helpers.tiny_model import _batch, _encode_corpus

    tok = train_tokenizer(_corpus(), vocab_size=300)
    pairs = [("Question: Ann has 3 pens.\nAnswer:", " 3 + 1 = 4\n#### 4"), ("Q:", " 7")]
    data, n_prompt = _encode_corpus(tok, [*pairs, "a plain text"], max_length=64)
    for (prompt, completion), ids, n in zip(pairs, data, n_prompt, strict=False):
        assert tok.decode(ids) == prompt + completion + tok.eos_token
        assert tok.decode(ids[:n]) == prompt
    assert n_prompt[2] == 0
    input_ids, mask, labels = _batch(data, n_prompt, [0, 1, 2], tok.pad_token_id)
    for row in range(3):
        scored = (labels[row] != -100).nonzero()[:, 0].tolist()
        assert scored == list(range(n_prompt[row], len(data[row])))  # the completion and its EOS
        assert labels[row, scored].tolist() == input_ids[row, scored].tolist() == data[row][n_prompt[row] :]
        assert mask[row].sum() == len(data[row])


def test_fast_cpu_matmul_keeps_fp32_results_and_restores_settings(monkeypatch):
    from helpers import tiny_model

    model = build_model(load_profile("smoke").model, vocab_size=300, seed=0).eval()
    ids = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(0))
    before = (model.config._attn_implementation, torch.backends.mkldnn.matmul.fp32_precision)
    with torch.no_grad():
        reference = model(ids).logits
        with tiny_model.fast_cpu_matmul(model) as on:
            fast = model(ids).logits
    assert torch.allclose(fast, reference, atol=1e-5, rtol=1e-5)
    assert (model.config._attn_implementation, torch.backends.mkldnn.matmul.fp32_precision) == before
    if on:  # the oneDNN path is on where it computes exact fp32 products (this check's own subject)
        with pytest.raises(RuntimeError), tiny_model.fast_cpu_matmul(model):
            assert model.config._attn_implementation == "eager"
            assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
            raise RuntimeError
    assert (model.config._attn_implementation, torch.backends.mkldnn.matmul.fp32_precision) == before
    # Where oneDNN would round to bf16, nothing changes.
    monkeypatch.setattr(tiny_model, "_ONEDNN_EXACT", [False])
    with tiny_model.fast_cpu_matmul(model) as on:
        assert not on and torch.backends.mkldnn.matmul.fp32_precision == before[1]
