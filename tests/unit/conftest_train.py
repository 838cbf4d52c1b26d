"""Builders for the training tests: a tiny tokenizer, random Qwen3 models and synthetic rollouts.

Plain functions (not pytest fixtures) so the test files and the benchmark can share them.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

from helpers.prompting import build_completion, build_prompt

EOS, PAD = "<|endoftext|>", "<|pad|>"
CORPUS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:",
    " Tom has 3 + 4 = 7 apples.\n#### 7",
    "Question: A box holds 12 pens. How many pens are in 5 boxes?\nAnswer:",
    " 5 boxes hold 5 * 12 = 60 pens.\n#### 60",
    "Question: Sara reads 9 pages a day. How many pages in 6 days?\nAnswer:",
    " She reads 9 * 6 = 54 pages.\n#### 54 0123456789 + - * / = ?",
]


def make_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few word problems, with EOS and PAD tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="right")


def make_model(
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    head_dim: int = 16,
    intermediate_size: int = 64,
    seed: int = 0,
) -> torch.nn.Module:
    """A random Qwen3 causal LM of the given shape."""
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_base(folder: Path, **arch: int) -> Path:
    """Save a random tiny model and its tokenizer as a base-model folder (as the pipeline does)."""
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), **arch)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def make_rollouts(n_prompts: int = 6, k: int = 4, seed: int = 0) -> list[dict]:
    """Graded rollouts of made-up sums: group i has i % (k + 1) correct answers, so every mix occurs."""
    rng = random.Random(seed)
    rows = []
    for pid in range(n_prompts):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        n_correct = pid % (k + 1)
        for j in range(k):
            correct = j < n_correct
            answer = a + b if correct else a + b + rng.randint(1, 5)
            rows.append(
                {
                    "prompt_id": pid,
                    "question": question,
                    "reference": str(a + b),
                    "prompt": build_prompt(question),
                    "completion": build_completion(f"Tom has {a} + {b} = {answer} apples.\n#### {answer}"),
                    "reward": 1.0 if correct else 0.0,
                    "correct": correct,
                    "sample_logp": None,
                }
            )
    return rows
