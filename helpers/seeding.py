"""The one place that seeds every random number generator the project uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); same seed, same numbers on the CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (libraries still draw from the legacy global state)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic version; the CPU path is exact.
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN by default; our code never
        # reads uninitialised memory, and the filling costs a third of a CPU training step.
        torch.utils.deterministic.fill_uninitialized_memory = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private generator, so that sampling in one stage does not shift another's stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
