"""Test-wide settings, and the one executed copy of the book that notebook and book tests share.

Never reach the hub; keep every run folder in a fresh temporary directory; one thread.
"""

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A fresh run root per session: tests never reuse stages built by older code. Notebook
# kernels started by papermill inherit it.
os.environ["WSG_RUNS"] = tempfile.mkdtemp(prefix="wsg-test-runs-")
# One intra-op thread: on two shared cores, OpenMP threads spinning against each other make
# the tiny models' small matrix products up to 100x slower. Kernels and launched processes
# inherit the variable. WSG_TEST_THREADS=2 runs the suite with two threads, to check that
# no numeric tolerance depends on one reduction order.
THREADS = int(os.environ.get("WSG_TEST_THREADS", "1"))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ["MKL_NUM_THREADS"] = str(THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)

REPO = Path(__file__).resolve().parent.parent
SMOKE_BUILD = REPO / "_build" / "test-book"


@pytest.fixture(scope="session")
def smoke_book() -> dict:
    """Every notebook executed on `smoke` (in chapter order) and the book rendered from them.

    Returns the folders and per-notebook wall times; a failing notebook fails every test
    that uses this fixture, with papermill's cell error.
    """
    from helpers import book

    executed = SMOKE_BUILD / "executed"
    timings = book.execute("smoke", executed)
    html = book.render(book.assemble(executed, SMOKE_BUILD / "src"), SMOKE_BUILD / "html")
    return {"executed": executed, "html": html, "timings": timings}
