"""Test-wide settings: never reach the hub, and keep every run folder in a fresh temporary directory."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A fresh run root per session: tests never reuse stages built by older code. Notebook
# kernels started by papermill inherit it.
os.environ["WSG_RUNS"] = tempfile.mkdtemp(prefix="wsg-test-runs-")
