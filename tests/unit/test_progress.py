"""Progress on a side channel: bars write events to $WSG_PROGRESS, not to the page; the monitor prints them."""

import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from helpers import progress


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_bar_reports_to_the_file_and_prints_nothing_even_where_tqdm_is_disabled(
    tmp_path, monkeypatch, capsys
):
    side = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(side))
    monkeypatch.setenv("TQDM_DISABLE", "1")  # what the book's kernels run with
    for _ in progress.tqdm(range(7), desc="rollouts", unit="rollout"):
        pass
    events = _events(side)
    assert events[-1]["done"] and events[-1]["n"] == 7 and events[-1]["total"] == 7
    assert {e["desc"] for e in events} == {"rollouts"} and events[0]["unit"] == "rollout"
    assert events[0]["n"] == 0 and not events[0]["done"]  # the bar reports while it runs, not only at its end
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_an_explicitly_disabled_bar_stays_silent(tmp_path, monkeypatch):
    side = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(side))
    for _ in progress.tqdm(range(3), disable=True):
        pass
    assert not side.exists()


def test_without_the_side_channel_it_is_plain_tqdm(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    bar = progress.tqdm(range(2), disable=True)
    assert not isinstance(bar, progress.SideChannelBar)


def test_events_of_other_processes_arrive_whole(tmp_path):
    """Training runs in worker processes: their lines must not interleave with ours."""
    side = tmp_path / "progress.jsonl"
    code = (
        "from helpers import progress\n"
        "for i in range(300): progress.emit({'bar': 'w', 'n': i, 'pad': 'x' * 200})\n"
    )
    env = {**os.environ, progress.PROGRESS_ENV: str(side)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    events = _events(side)  # a torn line would not parse
    assert len(events) == 900 and len({e["pid"] for e in events}) == 3


def test_the_trainer_callback_reports_steps_and_the_end(tmp_path, monkeypatch):
    side = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(side))
    callback = progress.step_progress("sft (seed 1)", interval=0.0)
    state = SimpleNamespace(global_step=0, max_steps=3, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    events = _events(side)
    assert [e["n"] for e in events] == [0, 1, 2, 3, 3]
    assert events[-1]["done"] and events[-1]["total"] == 3 and events[-1]["desc"] == "train sft (seed 1)"


def test_describe_gives_the_time_left_from_the_rate():
    event = {
        "desc": "pretrain base",
        "n": 100,
        "total": 400,
        "unit": "step",
        "rate": 2.0,
        "postfix": "loss=2.1",
    }
    assert progress.describe(event) == "pretrain base 100/400 step, 2 step/s, loss=2.1, ETA 2m30s"
    assert progress.describe({**event, "done": True, "elapsed": 50}).endswith("done in 50s")


def _write(path, *events):
    with open(path, "a") as f:
        for e in events:
            f.write(json.dumps({"t": 0.0, "pid": 1, **e}) + "\n")


def test_the_monitor_shows_running_bars_logs_finished_stages_and_the_book_eta(tmp_path):
    side = tmp_path / "progress.jsonl"
    out = io.StringIO()
    monitor = progress.Monitor(side, stream=out, log_every=0.0, min_seconds=5.0)
    monitor.label = lambda: "01_base 12s"
    monitor.eta = lambda: 90.0
    bar = {"desc": "pretrain base", "n": 10, "total": 20, "unit": "step", "rate": 1.0, "elapsed": 10.0}
    _write(side, {**bar, "bar": 1}, {**bar, "bar": 2, "desc": "rollouts"})
    monitor.tick()
    line = out.getvalue().splitlines()[-1]
    assert (
        line.startswith("[book] 01_base 12s | ")
        and "pretrain base 10/20" in line
        and "rollouts 10/20" in line
    )
    assert line.endswith("book ETA ~1m30s")
    _write(
        side,
        {**bar, "bar": 1, "n": 20, "done": True},
        {**bar, "bar": 2, "desc": "rollouts", "elapsed": 1.0, "done": True},
    )
    monitor.tick()
    lines = out.getvalue().splitlines()
    assert "[book]   pretrain base 20/20 step, 1 step/s, done in 10s" in lines
    assert not any("rollouts" in x and "done" in x for x in lines)  # under min_seconds: no line of its own
    assert monitor.active == {}


def test_the_monitor_waits_for_a_line_being_written(tmp_path):
    side = tmp_path / "progress.jsonl"
    monitor = progress.Monitor(side, stream=io.StringIO())
    line = json.dumps({"t": 0, "pid": 1, "bar": 1, "desc": "x", "n": 1, "total": 2, "done": False})
    side.write_text(line[:10])
    assert monitor.poll() == [] and monitor.active == {}
    side.write_text(line + "\n")
    monitor.poll()
    assert monitor.active[(1, 1)]["n"] == 1


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (185, "3m05s"), (3720, "1h02m")])
def test_duration(seconds, text):
    assert progress.duration(seconds) == text
