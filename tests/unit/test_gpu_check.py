"""benchmarks/gpu_check.py runs its GPU code on the CPU: a 2-layer slice of Qwen3-4B's shapes, a short max_length."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from helpers.profiles import load_profile

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu(tmp_path) -> None:
    report_path = tmp_path / "gpu_check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--cpu", "--json", str(report_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["device"] == "cpu" and report["errors"] == {}
    methods = load_profile("paper").train.methods
    assert set(report["tiny"]["methods"]) == set(load_profile("tiny").train.methods)
    for part in ("tiny", "paper_shapes"):
        for method, result in report[part]["methods"].items():
            assert result["finite"] and result["median_step_seconds"] > 0, (part, method)
    shapes = report["paper_shapes"]
    assert shapes["layers"] == 2 and shapes["micro_batch"] == load_profile("paper").train.batch_size
    assert set(shapes["methods"]) == set(methods)
    # the projection covers every offline run of the paper profile and DPO's reference pass
    projection = shapes["projection"]
    assert set(projection["runs"]) == set(methods) | {"sft_order", "sft_seed", "dpo_samelr"}
    assert projection["dpo_reference_pass"] > 0 and math.isfinite(projection["total_gpu_hours"])
    assert projection["total_gpu_hours"] > sum(projection["runs"].values()) - 1e-12
    assert "skipped" in report["vllm"]
