"""Test-wide settings: never reach the hub, keep runs in a temporary folder, one thread pool."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("WSG_RUNS", os.path.join(os.path.dirname(__file__), "..", "_build", "test-runs"))
