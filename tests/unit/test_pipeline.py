"""The cached stages: inputs decide the folder, finished stages are reused, user rollouts are read."""

import dataclasses
import json

import pytest

from helpers.cache import is_done, stable_hash
from helpers.pipeline import problems_stage, read_jsonl, rollouts_stage
from helpers.profiles import load_profile
from helpers.rollouts import RolloutError


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WSG_RUNS", str(tmp_path))
    return tmp_path


def test_problems_stage_is_keyed_by_its_inputs(runs):
    smoke = load_profile("smoke")
    first = problems_stage(smoke)
    assert is_done(first) and problems_stage(smoke) == first
    train = read_jsonl(first / "train.jsonl")
    held_out = read_jsonl(first / "eval.jsonl")
    assert len(train) == smoke.data.n_train_prompts and len(held_out) == smoke.data.n_eval_problems
    assert all(int(p["answer"]) <= smoke.data.max_result for p in train)
    bigger = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, n_train_prompts=30))
    assert problems_stage(bigger) != first
    # A knob of a later stage does not invalidate this one.
    other_lr = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, lr=0.5))
    assert problems_stage(other_lr) == first


def test_rollouts_file_the_user_brings_replaces_sampling(runs, tmp_path):
    smoke = load_profile("smoke")
    records = [
        {"prompt_id": i // 2, "prompt": f"p{i // 2}", "completion": f"#### {i}", "reward": float(i % 2)}
        for i in range(8)
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    profile = dataclasses.replace(smoke, model=dataclasses.replace(smoke.model, rollouts_file=str(path)))
    folder = rollouts_stage(profile)
    assert len(read_jsonl(folder / "rollouts.jsonl")) == 8
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["mixed_share"] == 1.0 and summary["dpo_pairs"] == 4

    path.write_text(json.dumps({"prompt_id": 0, "prompt": "p", "completion": "c"}) + "\n")
    changed = dataclasses.replace(smoke, model=dataclasses.replace(smoke.model, rollouts_file=str(path)))
    with pytest.raises(RolloutError, match="mine.jsonl:1: missing field.*reward"):
        rollouts_stage(changed)
    assert not any(p.name.startswith(".rollouts") for p in (runs / "smoke").iterdir())  # nothing half-written


def _problem_file(path, answers):
    rows = [{"question": f"What is {a} plus zero?", "answer": f"It is {a}.\n#### {a}"} for a in answers]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("field", ["train_path", "eval_path"])
def test_an_edited_data_file_is_read_again(runs, tmp_path, field):
    smoke = load_profile("smoke")
    data_file = _problem_file(tmp_path / "mine.jsonl", [11, 12, 13])
    source = "train_source" if field == "train_path" else "eval_source"
    data = dataclasses.replace(
        smoke.data, n_train_prompts=3, n_eval_problems=3, **{source: "gsm8k", field: data_file}
    )
    profile = dataclasses.replace(smoke, data=data)
    split = "train.jsonl" if field == "train_path" else "eval.jsonl"
    first = problems_stage(profile)
    assert [p["answer"] for p in read_jsonl(first / split)] == ["11", "12", "13"]
    _problem_file(tmp_path / "mine.jsonl", [21, 22, 23])  # same path, new content
    second = problems_stage(profile)
    assert second != first and [p["answer"] for p in read_jsonl(second / split)] == ["21", "22", "23"]


def test_evaluation_is_keyed_by_the_content_of_its_problem_file(runs, tmp_path):
    from helpers.pipeline import _evaluation_inputs

    smoke = load_profile("smoke")
    path = _problem_file(tmp_path / "aime.jsonl", [1, 2])
    before = stable_hash(_evaluation_inputs(smoke, {}, path, None))
    assert stable_hash(_evaluation_inputs(smoke, {}, path, None)) == before
    _problem_file(tmp_path / "aime.jsonl", [3, 4])
    assert stable_hash(_evaluation_inputs(smoke, {}, path, None)) != before
    before = stable_hash(_evaluation_inputs(smoke, {}, "gsm8k", path))
    _problem_file(tmp_path / "aime.jsonl", [5, 6])
    assert stable_hash(_evaluation_inputs(smoke, {}, "gsm8k", path)) != before
