"""`make lab` starts JupyterLab both as root (the default user in containers) and as a normal user."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # the environment running the tests has jupyter
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _fake_id(folder: Path, uid: int) -> dict[str, str]:
    """An environment whose `id -u` prints `uid`, so the recipe can be checked for either user."""
    folder.mkdir()
    script = folder / "id"
    script.write_text(f"#!/bin/sh\necho {uid}\n")
    script.chmod(0o755)
    return dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("uid", [0, 1000])
def test_lab_recipe_allows_root_only_as_root(tmp_path, uid):
    # -n prints the recipe without running it; -o install never touches the environment.
    cmd = ["make", "-n", "-o", "install", "lab", f"VENV={VENV}"]
    done = subprocess.run(cmd, cwd=REPO, env=_fake_id(tmp_path / "bin", uid), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "jupyter lab" in line]
    assert ("--allow-root" in shlex.split(line)) == (uid == 0), line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_make_lab_starts_a_server(tmp_path):
    """The real thing, as whoever runs the tests: wait until Jupyter says it is serving, then stop it."""
    port = _free_port()
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=20"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_PLATFORM_DIRS="1")
    cmd = ["make", "-o", "install", "lab", f"VENV={VENV}", f"LAB_ARGS={args}"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "is running at" in line:
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    while not serving.is_set() and proc.poll() is None and time.monotonic() < deadline:
        serving.wait(0.2)
    try:
        assert serving.is_set(), "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # make, its shell and jupyter: the group this test started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
