"""LoRA weight updates as low-rank factors: dW = scale * B @ A, read from any PEFT adapter.

Every geometry number in the book is computed on these factors (B: d_out x r,
A: r x d_in), never on the dense d_out x d_in matrix, so the same code answers in
seconds for the 144 modules of a Qwen3-4B adapter. Factors are kept in float64.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

# PEFT saves "base_model.model.<module>.lora_A.weight" (older files may keep an
# adapter-name segment: "...lora_A.default.weight").
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")
_LAYER = re.compile(r"\.(\d+)\.")
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(ValueError):
    """A folder that is not a usable LoRA adapter, or adapters that cannot be compared."""


@dataclass
class LowRankDelta:
    """One module's update dW = scale * B @ A (B: d_out x r, A: r x d_in)."""

    B: torch.Tensor
    A: torch.Tensor
    scale: float = 1.0
    module: str | None = None  # base model module name, e.g. "model.layers.3.self_attn.q_proj"
    layer: int | None = None
    projection: str | None = None  # last part of the module name, e.g. "q_proj"

    def __post_init__(self) -> None:
        if self.B.ndim != 2 or self.A.ndim != 2 or self.B.shape[1] != self.A.shape[0]:
            raise AdapterError(
                f"LowRankDelta{f' {self.module}' if self.module else ''}: B {tuple(self.B.shape)} and "
                f"A {tuple(self.A.shape)} are not d_out x r and r x d_in"
            )
        self.scale = float(self.scale)

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of the dense update."""
        return (int(self.B.shape[0]), int(self.A.shape[1]))

    @property
    def rank(self) -> int:
        """The LoRA rank r (an upper bound on the rank of dW)."""
        return int(self.A.shape[0])

    def dense(self) -> torch.Tensor:
        """The d_out x d_in matrix (for tests, references and merging into a model)."""
        return self.scale * (self.B @ self.A)

    def frobenius_norm(self) -> float:
        """||dW||_F from the r x r Gram matrices: s^2 tr((B^T B)(A A^T))."""
        B, A = self.B.to(torch.float64), self.A.to(torch.float64)
        gram = (B.T @ B) * (A @ A.T)
        return abs(self.scale) * math.sqrt(max(float(gram.sum()), 0.0))

    def to(self, dtype: torch.dtype) -> LowRankDelta:
        """The same delta with factors cast to `dtype`."""
        return LowRankDelta(
            self.B.to(dtype), self.A.to(dtype), self.scale, self.module, self.layer, self.projection
        )


def parse_module(name: str) -> tuple[int | None, str]:
    """Layer index (first integer path segment) and projection (last segment) of a module name."""
    match = _LAYER.search(f".{name}.")
    return (int(match.group(1)) if match else None), name.rsplit(".", 1)[-1]


def read_adapter_config(adapter_dir: str | Path) -> dict:
    """The adapter_config.json of a PEFT LoRA adapter folder, checked."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise AdapterError(f"{folder}: not a folder (expected a PEFT adapter folder)")
    path = folder / "adapter_config.json"
    if not path.exists():
        raise AdapterError(f"{folder}: no adapter_config.json, so this is not a PEFT adapter folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path}: not valid JSON: {err}") from None
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"{path}: peft_type is {config.get('peft_type')!r}, only LORA adapters are supported"
        )
    if config.get("use_dora"):
        raise AdapterError(f"{path}: a DoRA adapter is not a pure low-rank update (use_dora is true)")
    return config


def adapter_base_model(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on (`base_model_name_or_path`), or None if unrecorded."""
    return read_adapter_config(adapter_dir).get("base_model_name_or_path") or None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.exists():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path), device="cpu")
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a corrupt or truncated file: say which one
            raise AdapterError(f"{path}: cannot read adapter weights: {err}") from None
    raise AdapterError(f"{folder}: no adapter weights (expected one of {', '.join(WEIGHT_FILES)})")


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a suffix of the module name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_deltas(adapter_dir: str | Path, dtype: torch.dtype = torch.float64) -> dict[str, LowRankDelta]:
    """All LoRA updates of a PEFT adapter, keyed by the base model's module name.

    scale = alpha / r (alpha / sqrt(r) with use_rslora), with r and alpha per module
    from rank_pattern / alpha_pattern. Keys are sorted by layer, then name. dW is
    always d_out x d_in, also for Conv1D (fan_in_fan_out) layers that store W transposed.
    AdapterError, naming the folder and the module, for factors with NaN or inf.
    """
    folder = Path(adapter_dir)
    config = read_adapter_config(folder)
    weights = _read_weights(folder)
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        if "lora_" not in key:
            continue  # modules_to_save and the like are full weights, not deltas
        match = _KEY.match(key)
        if match is None:
            raise AdapterError(
                f"{folder}: unsupported LoRA tensor {key!r} (only linear lora_A / lora_B weights, "
                "no embedding LoRA, lora_bias or DoRA magnitudes)"
            )
        factors.setdefault(match["module"], {})[match["side"]] = tensor
    if not factors:
        raise AdapterError(f"{folder}: the weights file holds no lora_A / lora_B tensors")
    rslora = bool(config.get("use_rslora", False))
    deltas = {}
    for module, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise AdapterError(
                f"{folder}: module {module} has lora_{''.join(pair)} but not both lora_A and lora_B"
            )
        for side in ("A", "B"):
            if not bool(torch.isfinite(pair[side]).all()):
                bad = int((~torch.isfinite(pair[side])).sum())
                raise AdapterError(
                    f"{folder}: module {module} has {bad} non-finite value(s) (NaN or inf) in lora_{side}; "
                    "the adapter was saved from a diverged run"
                )
        A, B = pair["A"].to(dtype), pair["B"].to(dtype)
        r = int(A.shape[0])
        r_config = int(_pattern_value(config.get("rank_pattern"), module, config.get("r", r)))
        if r_config != r:
            raise AdapterError(
                f"{folder}: module {module} has rank {r} in the weights but {r_config} in the config"
            )
        alpha = float(_pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", r)))
        scale = alpha / math.sqrt(r) if rslora else alpha / r
        layer, projection = parse_module(module)
        deltas[module] = LowRankDelta(B, A, scale, module=module, layer=layer, projection=projection)
    return dict(sorted(deltas.items(), key=lambda kv: (_sort_layer(kv[1].layer), kv[0])))


def _sort_layer(layer: int | None) -> int:
    return -1 if layer is None else layer


def check_compatible(
    deltas_a: dict[str, LowRankDelta],
    deltas_b: dict[str, LowRankDelta],
    name_a: str = "a",
    name_b: str = "b",
) -> None:
    """Raise AdapterError unless both adapters update the same modules with the same shapes."""
    only_a, only_b = sorted(set(deltas_a) - set(deltas_b)), sorted(set(deltas_b) - set(deltas_a))
    if only_a or only_b:
        raise AdapterError(
            f"adapters {name_a} and {name_b} target different modules: only in {name_a}: "
            f"{_few(only_a)}; only in {name_b}: {_few(only_b)}"
        )
    for module, delta in deltas_a.items():
        if delta.shape != deltas_b[module].shape:
            raise AdapterError(
                f"adapters {name_a} and {name_b} differ in shape at {module}: "
                f"{delta.shape} vs {deltas_b[module].shape} (different base models?)"
            )


def check_same_base(adapter_dirs: list[str | Path]) -> str | None:
    """The common base model of several adapters; AdapterError if two record different ones."""
    bases = {str(d): adapter_base_model(d) for d in adapter_dirs}
    named = {d: b for d, b in bases.items() if b}
    if len(set(named.values())) > 1:
        listing = "; ".join(f"{d}: {b}" for d, b in named.items())
        raise AdapterError(f"adapters were trained on different base models ({listing})")
    return next(iter(named.values()), None)


def _few(names: list[str], n: int = 3) -> str:
    if not names:
        return "none"
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
