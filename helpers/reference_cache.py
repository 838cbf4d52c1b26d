"""Reference log-probs (DPO's and the other reference-based losses'), computed once and cached.

The pass over the base model with the adapters switched off is the same for every run that
trains on the same data from the same base and tokenizer (DPO, dpo_samelr, IPO, ...), so it is
a cached stage keyed by what decides its numbers: the base's files, the tokenizer's content,
the data, max_length and dtype. Concurrent runs may both compute it; the first one's folder
is kept (helpers.cache.cached_stage), so the result is the same either way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset

from helpers.cache import atomic_write_json, cached_stage, read_json, stable_hash
from helpers.losses import BLOCKS, REFERENCE_COLUMNS
from helpers.profiles import Profile
from helpers.trainer import MethodCollator, reference_logps

REF_LOGPS_VERSION = 2  # 2: rows whose prompt exceeds max_length are dropped, not cut
TOKENIZER_FILES = (
    "tokenizer*",
    "vocab*",
    "merges*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
)


def base_fingerprint(base_dir: str | os.PathLike) -> dict[str, Any]:
    """What identifies a base model cheaply: its config and the names and sizes of its weight files."""
    path = Path(base_dir)
    if not path.is_dir():
        return {"hub_id": str(base_dir)}
    files = sorted((p.name, p.stat().st_size) for p in path.glob("*.safetensors"))
    config = (path / "config.json").read_text() if (path / "config.json").exists() else ""
    return {"path": str(path.resolve()), "files": files, "config": stable_hash(config)}


def data_hash(ds: Dataset, columns: tuple[str, ...]) -> str:
    """sha256 over the given text columns, row by row."""
    digest = hashlib.sha256()
    for row in ds.select_columns(list(columns)):
        digest.update(json.dumps([row[c] for c in columns]).encode())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any, base_dir: str | os.PathLike) -> dict[str, Any]:
    """What decides the token ids: the content of the tokenizer's files, its vocabulary and its chat template."""
    path = Path(base_dir)
    files = {}
    if path.is_dir():
        for pattern in TOKENIZER_FILES:
            for file in sorted(path.glob(pattern)):
                files[file.name] = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return {
        "files": files,
        "vocab": stable_hash(vocab),
        "chat_template": stable_hash(getattr(tokenizer, "chat_template", None) or ""),
        "special": [tokenizer.eos_token_id, tokenizer.pad_token_id],
    }


def cached_reference_logps(
    profile: Profile,
    base_dir: str | os.PathLike,
    model: Any,
    tokenizer: Any,
    ds: Dataset,
    collator: MethodCollator,
    root: Path,
    method: str = "dpo",
) -> dict[str, list[float]]:
    """Reference log-probs (DPO's, or those of REFERENCE_COLUMNS[method]), once per (base, tokenizer, data), cached."""
    names = REFERENCE_COLUMNS[method]
    inputs = {
        "v": REF_LOGPS_VERSION,
        "base": base_fingerprint(base_dir),
        "tokenizer": tokenizer_fingerprint(tokenizer, base_dir),
        "data": data_hash(ds, ("prompt", *BLOCKS[method])),
        "max_length": profile.model.max_length,
        "dtype": profile.model.dtype,
    }
    if names != REFERENCE_COLUMNS["dpo"]:  # DPO's key unchanged, so its cached pass stays valid
        inputs["columns"] = list(names)
    state = PartialState()

    def build(folder: Path) -> None:
        ref = reference_logps(model, ds, collator, profile.train.batch_size, state.device, names)
        atomic_write_json(folder / "ref_logps.json", ref)

    with state.main_process_first():
        folder = cached_stage("dpo_ref_logps", inputs, build, root=root)
    return read_json(folder / "ref_logps.json")
