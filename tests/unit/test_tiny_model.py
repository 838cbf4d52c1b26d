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


def test_learning_rate_cycles_anneal_before_each_checkpoint():
    from helpers.tiny_model import lr_factor

    one = [lr_factor(s, 100) for s in range(100)]
    assert one[0] == pytest.approx(0.2) and max(one) == pytest.approx(1.0) and one[-1] < 0.06
    two = [lr_factor(s, 100, restarts=[40]) for s in range(100)]
    assert two[39] < 0.06  # annealed at the end of the first cycle (the student checkpoint)
    assert two[40] == pytest.approx(1 / 3) and two[42] == pytest.approx(1.0)  # warm restart, 3-step warmup
    assert two[-1] < 0.06 and lr_factor(100, 100, [40]) < 0.06  # the scheduler's final call is defined
