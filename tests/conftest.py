"""Test-wide settings: never reach the hub, and keep every run folder in a fresh temporary directory."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A fresh run root per session: tests never reuse stages built by older code. Notebook
# kernels started by papermill inherit it.
os.environ["WSG_RUNS"] = tempfile.mkdtemp(prefix="wsg-test-runs-")
# One intra-op thread: on two shared cores, OpenMP threads spinning against each other make
# the tiny models' small matrix products up to 100x slower. Kernels and launched processes
# inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
