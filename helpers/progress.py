"""Progress of long work on a side channel, so the terminal sees it and the rendered pages do not.

`make book` runs the notebooks in kernels whose output becomes the book, so bars there would
end up on the pages (the kernels run with TQDM_DISABLE). Instead `helpers.book` points
$WSG_PROGRESS at a file; every bar made with `progress.tqdm` (pretraining steps, rollouts,
evaluation batches, training runs) and every Trainer with a `step_progress` callback append
one JSON line per update to it, from the kernel and from training worker processes alike,
and `Monitor` (run by helpers.book) tails the file and prints one status line with the time
left. Without $WSG_PROGRESS, `progress.tqdm` is plain `tqdm.auto.tqdm`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _std_tqdm

PROGRESS_ENV = "WSG_PROGRESS"
EMIT_INTERVAL = 0.5  # seconds between two events of one bar (its last one always goes)


def emit(event: dict[str, Any]) -> None:
    """Append one event to the $WSG_PROGRESS file (nothing when unset). One `write` per line on a
    file opened for appending, so lines of concurrent processes do not interleave. Progress never
    stops a run: an unwritable file is ignored."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "pid": os.getpid(), **event}, default=str) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


class _NullFile:
    """Where a side-channel bar's text goes: nowhere (its numbers go to the file)."""

    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass


class SideChannelBar(_std_tqdm):
    """A tqdm whose every refresh becomes an event in $WSG_PROGRESS instead of text on stderr.
    It is on even where TQDM_DISABLE is set (the kernels of `make book`) unless the caller passes
    `disable=True`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["disable"] = bool(kwargs.get("disable"))
        kwargs["file"] = _NullFile()
        kwargs.setdefault("mininterval", 1.0)
        kwargs.setdefault("delay", 0)
        super().__init__(*args, **kwargs)

    def _event(self, done: bool) -> dict[str, Any]:
        d = self.format_dict
        rate = d.get("rate") or (d["n"] / d["elapsed"] if d["elapsed"] > 0 and d["n"] else None)
        return {
            "bar": id(self),
            "desc": d.get("prefix") or "",
            "n": d["n"],
            "total": d.get("total"),
            "unit": d.get("unit", "it"),
            "rate": rate,
            "elapsed": d["elapsed"],
            "postfix": d.get("postfix") or "",
            "done": done,
        }

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # set_postfix refreshes on every call: keep the file to a line per EMIT_INTERVAL per bar
        now = time.monotonic()
        if not self.disable and (now - getattr(self, "_emitted", -EMIT_INTERVAL) >= EMIT_INTERVAL):
            self._emitted = now
            emit(self._event(done=False))
        return True

    def close(self) -> None:
        if not self.disable:
            emit(self._event(done=True))
        super().close()


def tqdm(*args: Any, **kwargs: Any) -> _std_tqdm:
    """`tqdm.auto.tqdm`, or a SideChannelBar when $WSG_PROGRESS is set."""
    if os.environ.get(PROGRESS_ENV):
        return SideChannelBar(*args, **kwargs)
    return _auto_tqdm(*args, **kwargs)


def step_progress(label: str, interval: float = 1.0) -> Any:
    """A transformers TrainerCallback reporting `label`'s optimiser steps to $WSG_PROGRESS (at most
    every `interval` seconds; the first and the last step always). Silent without $WSG_PROGRESS.
    (Built here so that importing this module, as the book runner does, does not import transformers.)"""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def __init__(self) -> None:
            self._start = self._last = 0.0

        def _emit(self, state: Any, done: bool) -> None:
            elapsed = time.perf_counter() - self._start
            n = state.global_step
            emit(
                {
                    "bar": f"train:{label}",
                    "desc": f"train {label}",
                    "n": n,
                    "total": state.max_steps,
                    "unit": "step",
                    "rate": n / elapsed if n and elapsed > 0 else None,
                    "elapsed": elapsed,
                    "postfix": "",
                    "done": done,
                }
            )

        def on_train_begin(self, args, state, control, **kwargs):
            self._start = self._last = time.perf_counter()
            if state.is_world_process_zero:
                self._emit(state, done=False)

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if state.is_world_process_zero and now - self._last >= interval:
                self._last = now
                self._emit(state, done=False)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self._emit(state, done=True)

    return StepProgress()


def duration(seconds: float) -> str:
    """A short time: 12s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(event: dict[str, Any]) -> str:
    """One bar as text: `pretrain base 340/1500 step, 12.0 step/s, loss=2.1, tok/s=5400, ETA 1m36s`."""
    n, total, unit, rate = event["n"], event.get("total"), event.get("unit") or "it", event.get("rate")
    text = f"{event.get('desc') or 'working'} {n:g}" + (f"/{total:g}" if total else "") + f" {unit}"
    if rate:
        text += f", {rate:.3g} {unit}/s"
    if event.get("postfix"):
        text += f", {event['postfix']}"
    if event.get("done"):
        return text + f", done in {duration(event.get('elapsed') or 0)}"
    if rate and total:
        text += f", ETA {duration((total - n) / rate)}"
    return text


class Monitor:
    """Tails a progress file in a thread and prints where the work is: on a terminal one line
    rewritten in place, elsewhere (logs, CI) a line every `log_every` seconds. A bar that ran
    for at least `min_seconds` gets a line of its own when it finishes, so the log keeps a
    record stage by stage. `label()` names the current step (the notebook) and `eta()` the
    book's time left, both asked at every print."""

    def __init__(
        self,
        path: str | os.PathLike,
        stream: TextIO | None = None,
        interval: float = 1.0,
        log_every: float = 30.0,
        min_seconds: float = 5.0,
    ):
        self.path = Path(path)
        self.stream = stream or sys.stdout
        self.interval, self.log_every, self.min_seconds = interval, log_every, min_seconds
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label: Any = lambda: ""
        self.eta: Any = lambda: None
        self.active: dict[tuple, dict] = {}
        self._offset = 0
        self._last_line = ""
        self._last_print = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        """Print a line of the caller's own (above the status line on a terminal)."""
        self._write(line, newline=True)

    def poll(self) -> list[str]:
        """Read the new events; returns the lines of the bars that finished (long enough to show)."""
        finished: list[str] = []
        if not self.path.exists():
            return finished
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._offset += end
        for raw in data[:end].splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            key = (event.get("pid"), event.get("bar"))
            if event.get("done"):
                self.active.pop(key, None)
                if (event.get("elapsed") or 0) >= self.min_seconds:
                    finished.append(describe(event))
            else:
                self.active[key] = event
        return finished

    def status(self) -> str:
        """The current line: label, the most recent bars (at most three), the book's ETA."""
        parts = [p for p in [self.label()] if p]
        recent = sorted(self.active.values(), key=lambda e: e["t"], reverse=True)[:3]
        parts += [describe(e) for e in recent]
        eta = self.eta()
        if eta is not None:
            parts.append(f"book ETA ~{duration(eta)}")
        return "[book] " + " | ".join(parts)

    def tick(self, force: bool = False) -> None:
        """Poll once and print what changed."""
        for line in self.poll():
            self._write(f"[book]   {line}", newline=True)
        line = self.status()
        now = time.monotonic()
        if self.tty:
            if line != self._last_line:
                self._write(line, newline=False)
        elif force or (line != self._last_line and now - self._last_print >= self.log_every):
            self._write(line, newline=True)
            self._last_print = now
        self._last_line = line

    def _write(self, line: str, newline: bool) -> None:
        with self._lock:
            if self.tty:
                width = max(20, _terminal_width() - 1)
                self.stream.write(
                    "\r\x1b[2K" + (line if newline else line[:width]) + ("\n" if newline else "")
                )
                self._last_line = "" if newline else self._last_line
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # the monitor never stops the book
                pass

    def __enter__(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="progress-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            for line in self.poll():
                self._write(f"[book]   {line}", newline=True)
        except OSError:
            pass
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 20)).columns
