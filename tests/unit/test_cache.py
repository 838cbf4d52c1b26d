"""Run folders: finished stages are reused, interrupted ones leave nothing a rerun would trust."""

import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cache import (
    DONE,
    atomic_write_json,
    cached_stage,
    file_key,
    is_done,
    publish,
    scratch_path,
    stable_hash,
)


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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_temporary_folder_names_its_writer(tmp_path):
    seen = []
    cached_stage("demo", {"a": 1}, lambda folder: seen.append(folder.name), tmp_path)
    assert f"-{os.getpid()}-" in seen[0] and seen[0].startswith(".demo-")


def test_stale_scratch_of_dead_processes_is_removed_at_the_next_run(tmp_path):
    final = tmp_path / "demo-x"
    dead = scratch_path(final)
    dead.mkdir()
    (dead / "big.bin").write_bytes(b"0" * 100)
    dead = dead.rename(dead.with_name(re.sub(r"-\d+-([0-9a-f]{8})$", rf"-{_dead_pid()}-\1", dead.name)))
    alive = scratch_path(final)  # this process: still writing, must stay
    alive.mkdir()
    elsewhere = tmp_path / dead.name.replace(dead.name.split("-")[2], "otherhost")  # another host's
    elsewhere.mkdir()
    unrelated = tmp_path / ".notes.tmp"
    unrelated.mkdir()
    cached_stage("demo", {"a": 1}, lambda folder: None, tmp_path)
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and unrelated.exists()


def test_a_stage_finished_by_another_writer_meanwhile_is_kept(tmp_path):
    def inner(folder):
        (folder / "who.txt").write_text("first")

    def outer(folder):
        (folder / "who.txt").write_text("second")
        cached_stage("demo", {"a": 1}, inner, tmp_path)  # another writer publishes while we build

    final = cached_stage("demo", {"a": 1}, outer, tmp_path)
    assert (final / "who.txt").read_text() == "first" and is_done(final)
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_publish_keeps_a_complete_folder_that_appears_after_the_check(tmp_path, monkeypatch):
    """The rename itself fails when the other writer won between our check and our rename."""
    final = tmp_path / "demo"
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    for folder, who in ((theirs, "theirs"), (ours, "ours")):
        folder.mkdir()
        (folder / "who.txt").write_text(who)
    checks = []

    def complete(folder):
        checks.append(folder)
        if len(checks) == 1:  # first check: nothing there yet; then the other writer publishes
            theirs.rename(final)
            (final / DONE).write_text("{}")
            return False
        return is_done(folder)

    assert publish(ours, final, complete) == final
    assert (final / "who.txt").read_text() == "theirs" and not ours.exists()


def _build_slowly(root: str, seconds: float, barrier) -> str:
    def build(folder):
        (folder / "who.txt").write_text(str(os.getpid()))
        time.sleep(seconds)
        (folder / "rest.txt").write_text("complete")

    barrier.wait()
    final = cached_stage("race", {"a": 1}, build, root)
    first = (final / "who.txt").read_text()
    time.sleep(2.5)  # the other writer finishes meanwhile; what we returned must not change under us
    return f"{final}|{first}|{(final / 'who.txt').read_text()}|{(final / 'rest.txt').read_text()}"


def test_two_processes_building_one_stage_leave_one_complete_result(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            jobs = [pool.apply_async(_build_slowly, (str(tmp_path), s, barrier)) for s in (0.3, 1.5)]
            results = [job.get(timeout=120) for job in jobs]
    finals, firsts, lasts, rests = zip(*(r.split("|") for r in results), strict=True)
    assert len(set(finals)) == 1 and is_done(finals[0])
    assert firsts == lasts  # nobody's finished stage was replaced after it was returned
    assert len(set(firsts)) == 1 and rests == ("complete", "complete")
    assert [p.name for p in tmp_path.iterdir()] == [Path(finals[0]).name]


def test_file_key_follows_the_content_not_the_path(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"q": 1}\n')
    before = file_key(a)
    assert before == file_key(str(a)) and before.startswith("sha256:")
    a.write_text('{"q": 2}\n')
    assert file_key(a) != before
    assert file_key(None) is None and file_key(tmp_path / "gone.jsonl") == "missing"
    assert file_key([a, tmp_path / "gone.jsonl"]) == [file_key(a), "missing"]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"1")
    key = file_key(folder)
    (folder / "w.bin").write_bytes(b"2")
    assert file_key(folder) != key
