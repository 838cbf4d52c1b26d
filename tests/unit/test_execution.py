"""The execution record and the page written from it (helpers.execution)."""

import json

from helpers import execution


def test_the_record_keeps_earlier_chapters_and_starts_over_for_another_profile(tmp_path):
    path = tmp_path / execution.RECORD
    execution.update(path, "smoke", "t0", {"00_problems": 3.04})
    record = execution.update(path, "smoke", "t1", {"01_base": 7.0})
    assert {k: v["seconds"] for k, v in record["chapters"].items()} == {"00_problems": 3.0, "01_base": 7.0}
    assert json.loads(path.read_text()) == record
    record = execution.update(path, "tiny", "t2", {"01_base": 9.0})
    assert list(record["chapters"]) == ["01_base"] and record["profile"] == "tiny"


def test_the_record_describes_this_machine_and_checkout(tmp_path):
    import os

    import torch

    record = execution.update(tmp_path / execution.RECORD, "smoke", "t0", {"00_problems": 1.0})
    assert record["machine"]["cores"] == os.cpu_count() >= record["machine"]["usable_cores"] >= 1
    assert bool(record["machine"]["gpus"]) == torch.cuda.is_available()
    assert record["libraries"]["torch"] == torch.__version__
    sha = execution.git_commit()["sha"]
    assert sha is None or (len(sha) == 40 and record["chapters"]["00_problems"]["commit"] == sha)


def _record():
    return {
        "profile": "tiny",
        "started": "2026-01-02T03:04:05+00:00",
        "finished": "2026-01-02T04:00:00+00:00",
        "commit": {"sha": "0123456789abcdef" * 2 + "01234567", "dirty": True},
        "machine": {
            "cpu": "Some CPU",
            "cores": 8,
            "usable_cores": 2,
            "gpus": [],
            "os": "Linux",
            "python": "3.11.7",
        },
        "libraries": {"torch": "2.13.0", "transformers": "5.24.0"},
        "chapters": {
            "00_problems": {"seconds": 12.5, "finished": "2026-01-02T03:05:00+00:00", "commit": None},
            "01_base": {"seconds": 125.0, "finished": "2026-01-02T03:07:05+00:00", "commit": "feedbeef" * 5},
        },
    }


def test_the_page_states_every_chapter_the_machine_the_versions_and_the_commit():
    text = execution.page(_record())
    assert text.startswith("# Execution\n")
    assert "| 00_problems | 12.5 s |" in text and "| 01_base | 2 min 05 s |" in text
    assert "chapters' wall time | 2 min 18 s" in text  # 12.5 + 125 s
    assert "| profile | `tiny` |" in text and "`0123456789ab` with uncommitted changes" in text
    assert "| CPU | Some CPU |" in text and "| cores | 8 (2 usable by the run) |" in text
    assert "| GPU | none (CPU only) |" in text and "| transformers | 5.24.0 |" in text
    assert "`feedbeeffeed`" in text
    gpu = _record()
    gpu["machine"]["gpus"] = ["NVIDIA H100"]
    assert "| GPU | NVIDIA H100 |" in execution.page(gpu)


def test_without_a_record_the_page_says_so(tmp_path):
    assert "No record" in execution.page(None)
    execution.write_page(tmp_path / "none", tmp_path / "src")
    assert (tmp_path / "src" / execution.PAGE).read_text() == execution.page(None)
