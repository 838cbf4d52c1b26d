"""One prepared GPU check of the paper profile: step times, peak memory, projected GPU-hours, vLLM parity.

    python benchmarks/gpu_check.py [--cpu] [--json FILE]

1. tiny: every method of the `tiny` profile trained a few steps on the device (bf16 on CUDA)
   from a tiny model pretrained here, on noisy-oracle rollouts; median step time, finite losses.
2. paper shapes: a Qwen3 built from Qwen3-4B-Instruct-2507's config (QWEN3_4B below: random
   weights, nothing downloaded) under the paper's LoRA; optimiser steps of every method at the
   paper's micro-batch with every row at the paper's max_length (the worst case): peak memory
   and step time, and from them the projected GPU-hours of the paper profile's training runs.
   A method that runs out of memory is retried with activation checkpointing.
3. vLLM against transformers: greedy answers of the tiny model (and of its SFT adapter) from
   both backends, when vLLM imports.

Under 8 minutes on one H100. On CPU (--cpu, or without CUDA) the same code runs on a 2-layer
slice of the 4B shapes (with a 32k vocabulary) and max_length 32 in float32, in about two
minutes; part 3 is skipped. Exit status 1 when any part failed (its error is in the report).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    PrinterCallback,
    Qwen3Config,
    TrainerCallback,
    TrainingArguments,
)

from helpers import train as T  # noqa: E402
from helpers.data import load_problems  # noqa: E402
from helpers.losses import loss_hparams  # noqa: E402
from helpers.method_data import build_method_dataset  # noqa: E402
from helpers.problems import problem_corpus  # noqa: E402
from helpers.profiles import Profile, load_profile  # noqa: E402
from helpers.prompting import build_completion, build_prompt  # noqa: E402
from helpers.rollouts import grade, oracle_completions, prompts_for  # noqa: E402
from helpers.seeding import seed_everything  # noqa: E402
from helpers.tiny_model import build_model, pretrain, save_model, train_tokenizer  # noqa: E402
from helpers.trainer import MethodCollator, MethodTrainer, reference_logps, tokenize_dataset  # noqa: E402

# Qwen3-4B-Instruct-2507's config.json (the values that set compute and memory).
QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-6,
    max_position_embeddings=262144,
    tie_word_embeddings=True,
)
PROMPT_BUDGET = 512  # prompt tokens of a full-length paper row (the rest is completion)
GiB = 2**30


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step (the device synchronised, so the time is the step's)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def device_profile(profile: Profile, cuda: bool, **model: Any) -> Profile:
    """The profile on this device: bf16 on CUDA, float32 on CPU."""
    m = dataclasses.replace(
        profile.model, dtype="bfloat16" if cuda else "float32", device="cuda" if cuda else "cpu", **model
    )
    return dataclasses.replace(profile, model=m, train=dataclasses.replace(profile.train, bf16=cuda))


def train_steps(
    profile: Profile,
    method: str,
    model: torch.nn.Module,
    ds: Dataset,
    steps: int,
    work: Path,
    cuda: bool,
    checkpointing: bool = False,
    pad_token_id: int = 0,
) -> dict[str, Any]:
    """`steps` optimiser steps of MethodTrainer under the profile's arguments: step times, losses, peak memory.

    One micro-batch per step: the paper's optimiser step is grad_accum of them.
    """
    collator = MethodCollator(pad_token_id, dpo=method == "dpo")
    result: dict[str, Any] = {}
    if method == "dpo":
        device = "cuda" if cuda else "cpu"
        start = time.perf_counter()
        ref = reference_logps(model, ds, collator, profile.train.batch_size, device)
        result["ref_seconds_per_batch"] = (time.perf_counter() - start) / math.ceil(
            len(ds) / profile.train.batch_size
        )
        for name, values in ref.items():
            ds = ds.add_column(name, values)
    args = T._training_args(profile, work / f"out-{method}", profile.train.lr_for(method), profile.train.seed)
    args |= {
        "max_steps": steps,
        "gradient_accumulation_steps": 1,
        "disable_tqdm": True,
        "logging_steps": 1,
        "use_cpu": not cuda,
        "activation_checkpointing": checkpointing,
    }
    timer = StepTimer()
    trainer = MethodTrainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=ds,
        data_collator=collator,
        method=method,
        hparams=loss_hparams(method, profile.train),
        last_good_dir=work / "last_good",
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # the report prints one line per method instead
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    result |= {
        "step_seconds": timer.times,
        "median_step_seconds": statistics.median(timer.times[1:] or timer.times),
        "losses": losses,
        "finite": all(math.isfinite(x) for x in losses),
        "peak_gib": torch.cuda.max_memory_allocated() / GiB if cuda else None,
        "activation_checkpointing": checkpointing,
    }
    if checkpointing:  # the base model is reused by the next method: leave it as it was
        model.activation_checkpointing_disable()
    del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


# --- 1. the tiny profile on the device ------------------------------------------------


def tiny_base(profile: Profile, work: Path, cuda: bool, pretrain_steps: int) -> tuple[Path, list[dict]]:
    """A tiny student pretrained here for a few hundred steps, and its problems."""
    d, m = profile.data, profile.model
    common = dict(seed=d.seed, min_steps=d.min_steps, max_steps=d.max_steps, max_result=d.max_result)
    corpus = load_problems("generated", "train", n=4000, **{**common, "seed": d.seed + 1})
    tokenizer = train_tokenizer(problem_corpus(corpus), m.vocab_size)
    texts = [
        build_prompt(p["question"], tokenizer) + build_completion(p["solution"], tokenizer) for p in corpus
    ]
    model = build_model(m, len(tokenizer), seed=profile.seed)
    pretrain(
        model,
        tokenizer,
        texts,
        pretrain_steps,
        m.pretrain_batch,
        m.pretrain_lr,
        m.max_length,
        profile.seed,
        device="cuda" if cuda else "cpu",
    )
    folder = save_model(model.to("cpu"), tokenizer, work / "tiny-base")
    return folder, load_problems("generated", "train", n=96, **common)


def check_tiny(work: Path, cuda: bool, steps: int, pretrain_steps: int) -> dict[str, Any]:
    """Every method of the tiny profile for `steps` steps on the device."""
    profile = device_profile(load_profile("tiny"), cuda)
    base, problems = tiny_base(profile, work, cuda, pretrain_steps)
    tokenizer = AutoTokenizer.from_pretrained(base)
    samples = oracle_completions(problems, profile.rollouts.k, 0.4, profile.seed)
    records = grade(problems, prompts_for(problems, tokenizer), samples, profile.rollouts.k)
    init = T.make_lora_init(profile, base, work / "tiny-init", profile.lora.init_seed)
    out: dict[str, Any] = {"base": str(base), "methods": {}}
    for method in profile.train.methods:
        ds = build_method_dataset(records, method, profile.train, seed=profile.train.seed)
        tokenizer, model = T._load(profile, base, init)
        ds = tokenize_dataset(ds, tokenizer, method, profile.model.max_length)
        result = train_steps(
            profile, method, model, ds, steps, work, cuda, pad_token_id=tokenizer.pad_token_id
        )
        if method == "sft":
            model.save_pretrained(work / "tiny-sft")
            out["sft_adapter"] = str(work / "tiny-sft")
        out["methods"][method] = result
        print(
            f"  tiny {method:11s} {1e3 * result['median_step_seconds']:8.1f} ms/step  finite={result['finite']}"
        )
    return out


# --- 2. one step per method at the paper's shapes ---------------------------------------


def qwen3_4b(layers: int, vocab: int, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """Qwen3-4B-Instruct-2507's architecture with `layers` layers (and `vocab`), random weights, on the device."""
    config = Qwen3Config(**{**QWEN3_4B, "num_hidden_layers": layers, "vocab_size": vocab})
    seed_everything(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def full_length_rows(method: str, n: int, max_length: int, vocab: int) -> Dataset:
    """`n` rows of random tokens at exactly max_length: a PROMPT_BUDGET-token prompt and the rest completion."""
    gen = torch.Generator().manual_seed(1)
    prompt = min(PROMPT_BUDGET, max_length // 4)

    def seq() -> tuple[list[int], list[int]]:
        ids = torch.randint(0, vocab, (max_length,), generator=gen).tolist()
        return ids, [0] * prompt + [1] * (max_length - prompt)

    rows = []
    for i in range(n):
        if method == "dpo":
            (c, cm), (r, rm) = seq(), seq()
            rows.append(
                {"chosen_input_ids": c, "chosen_completion_mask": cm, "rejected_input_ids": r}
                | {"rejected_completion_mask": rm}
            )
        else:
            ids, mask = seq()
            reward = 1.0 if method == "rft" else float(i % 2)
            rows.append(
                {"input_ids": ids, "completion_mask": mask, "reward": reward, "advantage": reward - 0.4}
            )
    return Dataset.from_list(rows)


def check_paper(
    work: Path, cuda: bool, steps: int, layers: int, max_length: int, vocab: int
) -> dict[str, Any]:
    """`steps` optimiser steps per method on Qwen3-4B shapes at the paper's micro-batch and max_length."""
    profile = device_profile(load_profile("paper"), cuda, max_length=max_length)
    t = profile.train
    base = qwen3_4b(layers, vocab, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu")
    params = sum(p.numel() for p in base.parameters())
    out: dict[str, Any] = {
        "layers": layers,
        "vocab": vocab,
        "max_length": max_length,
        "micro_batch": t.batch_size,
    }
    out |= {"parameters": params, "methods": {}}
    for method in t.methods:
        ds = full_length_rows(method, t.batch_size * steps, max_length, vocab)
        result: dict[str, Any] = {}
        for checkpointing in (False, True):
            seed_everything(profile.lora.init_seed)
            model = get_peft_model(base, T._lora_config(profile))
            try:
                result = train_steps(profile, method, model, ds, steps, work, cuda, checkpointing)
                break
            except torch.OutOfMemoryError:
                result = {"oom_without_checkpointing": True}
            finally:
                base = model.unload()
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
        out["methods"][method] = result
        peak = result.get("peak_gib")
        print(
            f"  4B/{layers}L {method:11s} {result.get('median_step_seconds', float('nan')):7.2f} s/micro-step  "
            + (f"peak {peak:5.1f} GiB" if peak is not None else "")
            + ("  (activation checkpointing)" if result.get("activation_checkpointing") else "")
        )
    out["projection"] = project(load_profile("paper"), out["methods"])
    return out


def project(paper: Profile, methods: dict[str, dict]) -> dict[str, Any]:
    """GPU-hours of the paper profile's training runs from the measured micro-step times (every row full length).

    An optimiser step is grad_accum micro-steps; the controls cost what their method costs;
    DPO's reference pass runs once over its pairs. Online GRPO (generation-bound), the
    rollouts and the evaluation are not included.
    """
    t = paper.train
    hours: dict[str, float] = {}
    for name in list(t.methods) + [c for c in t.controls if c != "online_grpo"]:
        measured = methods.get(T.CONTROLS.get(name, name), {})
        if "median_step_seconds" in measured:
            hours[name] = measured["median_step_seconds"] * t.grad_accum * t.steps / 3600
    ref = methods.get("dpo", {}).get("ref_seconds_per_batch")
    pairs = t.dpo_max_pairs or 0
    ref_hours = ref * math.ceil(pairs / t.batch_size) / 3600 if ref is not None else 0.0
    total = (sum(hours.values()) + ref_hours) * t.replicates
    return {
        "runs": hours,
        "dpo_reference_pass": ref_hours,
        "total_gpu_hours": total,
        "replicates": t.replicates,
    }


# --- 3. vLLM against transformers ---------------------------------------------------------


def check_vllm(base: Path, adapter: str | None, problems: list[dict], max_new_tokens: int) -> dict[str, Any]:
    """Greedy completions of both backends in bf16 on the same token ids: how many agree exactly, and in answer."""
    from peft import PeftModel

    from helpers.data import extract_answer
    from helpers.evaluate import _vllm_engine, generate, vllm_available

    if not vllm_available():
        return {"skipped": "vllm does not import here, or there is no CUDA device"}
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = prompts_for(problems, tokenizer)
    longest = max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    llm = _vllm_engine(base, [adapter] if adapter else [], longest + max_new_tokens, dtype="bfloat16")
    out: dict[str, Any] = {}
    for name, lora in (("base", None), ("sft adapter", adapter)):
        if name != "base" and lora is None:
            continue
        hf_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).to("cuda")
        if lora:
            hf_model = PeftModel.from_pretrained(hf_model, lora)
        hf = generate(hf_model, tokenizer, prompts, max_new_tokens, 64, backend="hf", progress=False)
        vllm = generate(
            llm, tokenizer, prompts, max_new_tokens, 64, backend="vllm", lora_dir=lora, progress=False
        )
        same = sum(a.strip() == b.strip() for a, b in zip(hf, vllm, strict=True))
        answers = sum(extract_answer(a) == extract_answer(b) for a, b in zip(hf, vllm, strict=True))
        out[name] = {"prompts": len(prompts), "identical": same, "same_answer": answers}
        print(
            f"  vLLM vs transformers, {name}: {same}/{len(prompts)} identical, {answers} with the same answer"
        )
        del hf_model
        gc.collect()
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU smoke: 2-layer slice, short max_length")
    parser.add_argument("--json", help="write the report here as JSON")
    parser.add_argument("--layers", type=int, help="layers of the 4B model (default 36 on CUDA, 2 on CPU)")
    parser.add_argument(
        "--max-length", type=int, help="tokens per row (default the paper's on CUDA, 32 on CPU)"
    )
    parser.add_argument("--vocab", type=int, help="vocabulary of the 4B model (default 151936; 32768 on CPU)")
    parser.add_argument("--paper-steps", type=int, help="steps per method at the 4B shapes (default 2 / 1)")
    parser.add_argument("--tiny-steps", type=int, help="steps per tiny method (default 12 on CUDA, 3 on CPU)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paper = load_profile("paper")
    layers = args.layers or (QWEN3_4B["num_hidden_layers"] if cuda else 2)
    max_length = args.max_length or (paper.model.max_length if cuda else 32)
    vocab = args.vocab or (QWEN3_4B["vocab_size"] if cuda else 32768)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "errors": {},
    }
    print(
        f"gpu_check on {report['device']}: 4B shapes, {layers} layers, vocab {vocab}, max_length {max_length}"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = {
            "tiny": lambda: check_tiny(
                work, cuda, args.tiny_steps or (12 if cuda else 3), 300 if cuda else 20
            ),
            "paper_shapes": lambda: check_paper(
                work, cuda, args.paper_steps or (2 if cuda else 1), layers, max_length, vocab
            ),
        }
        for name, run in parts.items():
            print(f"{name}:")
            start = time.perf_counter()
            try:
                report[name] = run()
            except Exception as err:  # a failed part must not hide the others' figures
                report["errors"][name] = "".join(traceback.format_exception(err))[-3000:]
                print(report["errors"][name])
            report.setdefault("seconds", {})[name] = time.perf_counter() - start
        print("vllm:")
        try:
            tiny = report.get("tiny", {})
            problems = load_problems("generated", "test", n=64, seed=7, max_result=99)
            report["vllm"] = (
                check_vllm(Path(tiny["base"]), tiny.get("sft_adapter"), problems, 160)
                if cuda and "base" in tiny
                else {"skipped": "needs CUDA and the tiny part"}
            )
        except Exception as err:
            report["errors"]["vllm"] = "".join(traceback.format_exception(err))[-3000:]
            print(report["errors"]["vllm"])
    report["seconds"]["total"] = time.perf_counter() - started
    projection = report.get("paper_shapes", {}).get("projection")
    if projection:
        label = "(a slice of the shapes: not a projection)"
        if cuda and layers == QWEN3_4B["num_hidden_layers"] and vocab == QWEN3_4B["vocab_size"]:
            label = "projected GPU-hours"
        print(f"{label}: {projection['total_gpu_hours']:.1f} for the paper profile's training runs")
    print(f"done in {report['seconds']['total']:.0f} s; errors: {sorted(report['errors']) or 'none'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
