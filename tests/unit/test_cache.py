"""Run folders: finished stages are reused, interrupted ones leave nothing a rerun would trust."""

import json

import pytest

from helpers.cache import atomic_write_json, cached_stage, is_done, stable_hash


def test_stage_is_built_once_and_reused(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "out.txt").write_text("hello")

    first = cached_stage("demo", {"a": 1}, build, tmp_path)
    second = cached_stage("demo", {"a": 1}, build, tmp_path)
    assert first == second and len(calls) == 1
    assert (first / "out.txt").read_text() == "hello" and is_done(first)
    other = cached_stage("demo", {"a": 2}, build, tmp_path)
    assert other != first and len(calls) == 2


def test_interrupted_stage_leaves_nothing_and_is_rebuilt(tmp_path):
    def dies(folder):
        (folder / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_stage("demo", {"a": 1}, dies, tmp_path)
    assert list(tmp_path.iterdir()) == []

    # A folder left by a killed process (no DONE marker) is never trusted.
    leftover = tmp_path / f"demo-{stable_hash({'a': 1})}"
    leftover.mkdir()
    (leftover / "out.txt").write_text("stale")
    built = cached_stage("demo", {"a": 1}, lambda f: (f / "out.txt").write_text("fresh"), tmp_path)
    assert built == leftover and (built / "out.txt").read_text() == "fresh"


def test_hash_ignores_key_order_and_atomic_json(tmp_path):
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    path = atomic_write_json(tmp_path / "x" / "y.json", {"v": 1.5})
    assert json.loads(path.read_text()) == {"v": 1.5}
    assert [p.name for p in path.parent.iterdir()] == ["y.json"]
