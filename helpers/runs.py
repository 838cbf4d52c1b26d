"""What the training chapter reports about each trained adapter: its log, its meta, its update norms."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .cache import read_json
from .deltas import load_deltas
from .geometry import frobenius_norms, global_norm


def training_logs(adapters: dict[str, Path]) -> dict[str, list[dict]]:
    """The per-step training log (loss, grad_norm, lr, loss metrics) of each adapter."""
    return {name: read_json(Path(folder) / "training_log.json") for name, folder in adapters.items()}


def run_table(adapters: dict[str, Path], deltas: dict[str, dict]) -> pd.DataFrame:
    """One row per run: method, control, learning rate, steps, passes over its data, time, data-order
    seed, first and last loss, update norm.

    `deltas` are the runs' updates as `load_all_deltas` returns them (loaded once per chapter).
    """
    rows = []
    for name, folder in adapters.items():
        meta = read_json(Path(folder) / "train_meta.json")
        log = read_json(Path(folder) / "training_log.json")
        rows.append(
            {
                "run": name,
                "method": meta["method"],
                "control": meta.get("control") or "",
                "lr": meta["lr"],
                "steps": meta["steps"],
                "rows": meta.get("rows"),
                "epochs": meta.get("epochs"),
                "seconds": meta["seconds"],
                "data_seed": meta.get("data_seed"),
                "first_loss": log[0]["loss"] if log else float("nan"),
                "last_loss": log[-1]["loss"] if log else float("nan"),
                "delta_norm": global_norm(deltas[name]),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def data_table(adapters: dict[str, Path]) -> pd.DataFrame:
    """One row per run: its rows kept, cut (completion truncated, no EOS) and dropped (prompt too long), and
    the passes over its rows by the result step (rows seen / rows). Online GRPO samples its own data: empty.
    """
    rows = []
    for name, folder in adapters.items():
        meta = read_json(Path(folder) / "train_meta.json")
        counts = meta.get("tokenization") or {}
        rows.append(
            {
                "run": name,
                "method": meta["method"],
                "rows kept": counts.get("kept"),
                "truncated": counts.get("truncated"),
                "dropped": counts.get("dropped"),
                "result step": meta.get("result_step", meta["steps"]),
                "rows seen": meta.get("examples_seen"),
                "passes": meta.get("epochs"),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def norms_by_layer(deltas: dict[str, dict]) -> pd.DataFrame:
    """Frobenius norm of each module's update, long format: run, module, layer, projection, norm."""
    rows = []
    for name, run in deltas.items():
        for module, norm in frobenius_norms(run).items():
            rows.append(
                {
                    "run": name,
                    "module": module,
                    "layer": run[module].layer,
                    "projection": run[module].projection,
                    "norm": norm,
                }
            )
    return pd.DataFrame(rows)


def load_all_deltas(adapters: dict[str, Path]) -> dict[str, dict]:
    """The low-rank updates of every run, keyed by run then module (float64, for exact geometry)."""
    return {name: load_deltas(folder) for name, folder in adapters.items()}


def base_weights(model_dir: str | Path, modules: list[str]) -> dict:
    """The base model's dense weights of the adapted modules (for the "path not taken" overlap)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {m: model.get_submodule(m).weight.detach().to(torch.float64) for m in modules}


def loss_series(logs: dict[str, list[dict]], key: str = "loss") -> dict[str, dict[str, list]]:
    """Each run's logged steps and `key` (the loss) as two lists, the shape helpers.spread summarises."""
    return {
        name: {"step": [e["step"] for e in log], key: [e[key] for e in log]} for name, log in logs.items()
    }


def update_norms(deltas: dict[str, dict]) -> dict[str, dict]:
    """Each run's update norm over all modules and per layer (in layer order)."""
    out = {}
    for name, run in deltas.items():
        by_layer: dict[int, float] = {}
        for module, norm in frobenius_norms(run).items():
            by_layer[run[module].layer] = by_layer.get(run[module].layer, 0.0) + norm**2
        out[name] = {"norm": global_norm(run), "by_layer": [by_layer[k] ** 0.5 for k in sorted(by_layer)]}
    return out
