"""The tiny base models: a byte-level BPE tokenizer and Qwen3-architecture models of ~1M parameters.

Pretrained from scratch on generated word problems so that the CPU book has a student
whose own answers are partly right, and a stronger teacher to write the rollouts, as
in the study (a strong teacher distilled into a smaller student).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

from .profiles import ModelConfig
from .progress import tqdm
from .seeding import seed_everything, torch_generator

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, split_digits: bool = True
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the problem corpus (GPT-2 style, no unknown tokens).

    With `split_digits`, every digit is its own token (as in LLaMA and Qwen tokenizers):
    a small model learns column-wise arithmetic far more easily than on merged numbers.
    """
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None, padding_side="right"
    )


def build_model(cfg: ModelConfig, vocab_size: int, hidden_size: int | None = None, seed: int = 0):
    """A randomly initialised Qwen3 causal LM with the profile's tiny architecture."""
    hidden = hidden_size or cfg.hidden_size
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=cfg.intermediate_size * hidden // cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_length,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        eos_token_id=None,
        pad_token_id=None,
    )
    seed_everything(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model


def _onednn_fp32_is_exact() -> bool:
    """Whether oneDNN, allowed to take fp32 products in bf16, still computes them in fp32 here.

    On CPUs without bf16 matrix units (AMD EPYC, most Intel Xeons before AMX) it runs its
    fp32 AVX-512 kernels; with AMX it would round the inputs to bf16, which we never want.
    """
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision") or not torch.backends.mkldnn.is_available():
        return False
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 128, generator=gen), torch.randn(128, 384, generator=gen)
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "ieee"
        exact = a @ b
        matmul.fp32_precision = "bf16"
        fast = a @ b
    finally:
        matmul.fp32_precision = before
    return bool((fast - exact).abs().max() <= 1e-5 * exact.abs().max())


_ONEDNN_EXACT: list[bool] = []  # the check runs once per process


@contextmanager
def fast_cpu_matmul(model: torch.nn.Module) -> Iterator[bool]:
    """For the block: fp32 matrix products through oneDNN, and eager attention, on CPU.

    torch sends fp32 products to MKL, which takes its AVX2 code path on AMD CPUs (about
    95 GFLOP/s per core on the EPYC we measured, against 230 through oneDNN's AVX-512
    kernels). oneDNN is only reached by allowing bf16 (`fp32_precision = "bf16"`), so
    this is done only where a check shows the products stay exact fp32; the CPU
    flash-attention kernel slows down under that flag, hence eager attention. Yields
    whether the fast path is on; the settings are restored on exit.
    """
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        yield False
        return
    if not _ONEDNN_EXACT:
        _ONEDNN_EXACT.append(_onednn_fp32_is_exact())
    if not _ONEDNN_EXACT[0]:
        yield False
        return
    matmul = torch.backends.mkldnn.matmul
    before, attention = matmul.fp32_precision, model.config._attn_implementation
    matmul.fp32_precision = "bf16"
    model.set_attn_implementation("eager")
    try:
        yield True
    finally:
        matmul.fp32_precision = before
        model.set_attn_implementation(attention)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (`parameters()` yields tied embeddings once)."""
    return sum(p.numel() for p in model.parameters())


@dataclass
class PretrainLog:
    """What pretraining did: the loss curve and its throughput."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0  # real tokens trained on
    positions: int = 0  # positions computed, padding included
    onednn: bool = False  # whether products went through oneDNN (fast_cpu_matmul)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def _encode_corpus(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str | tuple[str, str]], max_length: int
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each text + EOS, and how many leading tokens are prompt (0 for a plain text)."""
    eos = tokenizer.eos_token_id
    pairs = [t if isinstance(t, tuple) else ("", t) for t in texts]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    rests = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    ids = [(p + c)[: max_length - 1] + [eos] for p, c in zip(prompts, rests, strict=True)]
    return ids, [min(len(p), max_length - 1) for p in prompts]


def lr_factor(step: int, steps: int) -> float:
    """Multiplier of the peak learning rate: a 5% linear warmup, then cosine down to 5%."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def _batch(
    data: Sequence[list[int]], n_prompt: Sequence[int], rows: Sequence[int], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding and prompt tokens)."""
    width = max(len(data[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, i in enumerate(rows):
        seq = torch.tensor(data[i])
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        labels[row, n_prompt[i] : len(seq)] = seq[n_prompt[i] :]
    return input_ids, mask, labels


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, steps: int, gen: torch.Generator, pool: int = 16
) -> list[list[int]]:
    """`steps` batches of example indices drawn at random, grouped by length to spare padding.

    Every `pool` batches come from one random draw of pool * batch_size examples, sorted
    by length, cut into batches and shuffled: each example is as likely to be drawn as
    with plain random batches, but a batch's rows are of similar length, so most of the
    padded positions the model would compute (a third, on the tiny corpus) are gone.
    """
    batches: list[list[int]] = []
    while len(batches) < steps:
        n = min(pool, steps - len(batches))
        drawn = torch.randint(len(lengths), (n * batch_size,), generator=gen).tolist()
        drawn.sort(key=lambda i: lengths[i])
        chunks = [drawn[j * batch_size : (j + 1) * batch_size] for j in range(n)]
        batches += [chunks[j] for j in torch.randperm(n, generator=gen).tolist()]
    return batches


def pretrain(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str | tuple[str, str]],
    steps: int,
    batch_size: int,
    lr: float,
    max_length: int,
    seed: int,
    device: str = "cpu",
    checkpoints: dict[int, Path] | None = None,
    desc: str = "pretrain",
) -> PretrainLog:
    """Next-token pretraining on full problem texts (AdamW, warmup then cosine decay).

    A text given as a (prompt, completion) pair is trained on its completion only (the
    prompt is context), as the methods of chapter 2 train. Batches are grouped by length
    (`length_grouped_batches`). `checkpoints` maps a step
    to a folder where the model and tokenizer are saved when that step is reached, so one
    run can yield both a weaker and a stronger model.
    """
    log = PretrainLog()
    if steps <= 0:
        return log
    data, n_prompt = _encode_corpus(tokenizer, texts, max_length)
    pad = tokenizer.pad_token_id
    gen = torch_generator(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, steps))
    checkpoints = dict(checkpoints or {})
    batches = length_grouped_batches([len(s) for s in data], batch_size, steps, gen)
    with fast_cpu_matmul(model) as log.onednn:
        start = time.perf_counter()
        bar = tqdm(range(1, steps + 1), desc=desc, leave=False, unit="step")
        for step in bar:
            input_ids, mask, labels = _batch(data, n_prompt, batches[step - 1], pad)
            out = model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            log.tokens += int(mask.sum())
            log.positions += int(mask.numel())
            if step % 10 == 0 or step == steps:
                log.steps.append(step)
                log.loss.append(out.loss.item())
                tokens_per_s = log.tokens / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix({"loss": f"{log.loss[-1]:.3f}", "tokens/s": f"{tokens_per_s:.0f}"})
            if step in checkpoints:
                save_model(model, tokenizer, checkpoints[step])
        log.seconds = time.perf_counter() - start
    model.eval()
    return log


def save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """Save model and tokenizer so that AutoModelForCausalLM / AutoTokenizer reload them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
