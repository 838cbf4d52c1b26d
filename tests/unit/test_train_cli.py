"""The training command line lives apart from the trainer: no import cycle, `-m helpers.train` works."""

import subprocess
import sys

from helpers.cache import REPO_ROOT


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_the_trainer_does_not_import_the_pipeline():
    # pipeline -> train is the one direction: the trainer never reaches back into the stages
    done = _python("-c", "import sys, helpers.train; print('helpers.pipeline' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_python_m_helpers_train_is_the_command_line():
    done = _python("-m", "helpers.train", "--help")
    assert done.returncode == 0, done.stderr
    assert "python -m helpers.train" in done.stdout and "--method" in done.stdout
    bad = _python("-m", "helpers.train", "--profile", "smoke", "--method", "sft", "--control", "dpo_samelr")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: --control dpo_samelr is a variant of --method dpo, not sft"
    )
