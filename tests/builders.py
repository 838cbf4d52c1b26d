"""Builders for the unit tests: tiny tokenizers, random Qwen3 models, LoRA adapters, synthetic rollouts.

Plain functions (not pytest fixtures) so every test file builds what it needs with its own
parameters: `from tests.builders import make_model, make_tokenizer`. Everything is small
enough for a CPU test of seconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

from helpers.prompting import build_completion, build_prompt
from helpers.tiny_model import save_model, train_tokenizer

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
# A few word problems and their solutions: enough text for a BPE with digits and operators.
CORPUS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:",
    " Tom has 3 + 4 = 7 apples.\n#### 7",
    "Question: A box holds 12 pens. How many pens are in 5 boxes?\nAnswer:",
    " 5 boxes hold 5 * 12 = 60 pens.\n#### 60",
    "Question: Sara reads 9 pages a day. How many pages in 6 days?\nAnswer:",
    " She reads 9 * 6 = 54 pages.\n#### 54 0123456789 + - * / = ?",
]
WORD_SPECIALS = ("[PAD]", "[EOS]", "[UNK]")


def make_tokenizer(
    vocab_size: int = 320, texts: Sequence[str] | None = None, word_level: bool = False
) -> PreTrainedTokenizerFast:
    """A tokenizer trained on `texts` (default CORPUS), padding on the right.

    By default helpers.tiny_model's byte-level BPE without digit splitting (EOS
    "<|endoftext|>", PAD "<|pad|>"). With `word_level`, one id per distinct
    whitespace-separated word of `texts` in order of appearance, after [PAD] [EOS] [UNK]
    (ids 0, 1, 2): tokens are then whole words, easy to reason about in a test, and
    `vocab_size` is ignored.
    """
    texts = list(CORPUS if texts is None else texts)
    if not word_level:
        return train_tokenizer(texts, vocab_size, split_digits=False)
    words = [*WORD_SPECIALS, *(w for text in texts for w in text.split())]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pad, eos, unk = WORD_SPECIALS
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token=unk)


def make_model(
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    head_dim: int = 16,
    intermediate_size: int = 64,
    seed: int = 0,
    tie_word_embeddings: bool = True,
) -> torch.nn.Module:
    """A random Qwen3 causal LM of the given shape, seeded, in eval mode (it has no dropout anyway).

    Tied embeddings by default, like the pipeline's tiny models; untie them where a test
    edits lm_head alone or wants PEFT to save nothing but the adapter.
    """
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def save_base(folder: Path, **shape) -> Path:
    """Save a random model (make_model's `shape` keywords) and make_tokenizer() as a base-model folder.

    EOS and PAD ids are written into the configs, as the pipeline does for its tiny models.
    """
    tokenizer = make_tokenizer()
    return save_model(make_model(len(tokenizer), **shape), tokenizer, folder)


def make_adapter(model: torch.nn.Module, seed: int = 1, scale: float = 0.5, **lora):
    """`model` under a PEFT LoRA (r=4, alpha=8 on q/k/v/o unless `lora` overrides) with random lora_B.

    PEFT starts lora_B at zero, which would make every adapter a no-op; here each is
    scale * N(0, 1) from a generator seeded with `seed`. Returns the PeftModel, not yet saved.
    """
    from peft import LoraConfig, get_peft_model  # here: most tests that use the builders need no peft

    peft_model = get_peft_model(
        model, LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": list(LORA_TARGETS), **lora})
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return peft_model


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
