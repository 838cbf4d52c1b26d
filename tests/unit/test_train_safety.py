"""Training never loses work or trusts a stale result: --out, last_good, temporary folders, early errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import losses, pipeline, train, train_cli, trainer
from helpers.method_data import MethodDataError, load_rollouts
from helpers.profiles import PROFILE_DIR, load_profile
from helpers.rollouts import RolloutError, read_rollouts
from helpers.train import TrainConfigError, TrainingDiverged, make_lora_init, train_method
from tests.builders import make_rollouts, save_base

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def rollouts() -> list[dict]:
    return make_rollouts(6, 4)


def smoke(steps: int = 2):
    profile = load_profile("smoke")
    return dataclasses.replace(
        profile, train=dataclasses.replace(profile.train, steps=steps, result_step=steps, save_steps=())
    )


def files_of(folder: Path) -> dict[str, str]:
    """Every file under folder with the sha256 of its bytes: equal before and after means untouched."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


# --- --out: never delete what the program did not write ----------------------------


@pytest.mark.parametrize("kind", ["user folder", "run folder"])
def test_out_refuses_a_folder_the_program_did_not_write(tmp_path, base, rollouts, kind):
    out = tmp_path / "mywork"
    if kind == "user folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:  # `--out runs/smoke`: stages, not an adapter
        (out / "base-0123").mkdir(parents=True)
        (out / "base-0123" / "DONE.json").write_text("{}")
    before = files_of(out)
    with pytest.raises(TrainConfigError, match=re.escape(str(out)) + ".*did not write"):
        train_method(smoke(), "sft", base, rollouts, out, tmp_path / "init")
    assert files_of(out) == before
    assert not (tmp_path / "init").exists()  # refused before any work


def test_our_adapter_is_replaced_by_renames_and_survives_a_failed_swap(tmp_path, base, rollouts, monkeypatch):
    raw = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    raw["train"].update(steps=1, result_step=1, save_steps=[])
    profile_file = tmp_path / "mine.yaml"
    profile_file.write_text(yaml.safe_dump(raw))
    profile = load_profile(profile_file)
    out, init = tmp_path / "sft", tmp_path / "init"
    tmps = []
    finish = train._finish

    def record(tmp, *args):
        tmps.append(tmp)
        finish(tmp, *args)

    monkeypatch.setattr(train, "_finish", record)
    train_method(profile, "sft", base, rollouts, out, init)
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["profile_file"] == {
        "path": str(profile_file.resolve()),
        "sha256": hashlib.sha256(profile_file.read_bytes()).hexdigest(),
    }
    # the temporary folder is a sibling that names this process: concurrent runs never share one
    assert tmps[0].parent == out.parent and f"-{os.getpid()}-" in tmps[0].name
    before = files_of(out)

    real_rename, real_replace = os.rename, os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(src).name.startswith(".sft.tmp") and Path(dst) == out:
            raise OSError("disk went away")
        return (real_replace if failing.replace else real_rename)(src, dst, *args, **kwargs)

    def rename(src, dst, *a, **k):
        failing.replace = False
        return failing(src, dst, *a, **k)

    def replace(src, dst, *a, **k):
        failing.replace = True
        return failing(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk went away"):
        train_method(smoke(steps=2), "sft", base, rollouts, out, init)
    assert files_of(out) == before  # the old adapter is whole, not half-deleted
    monkeypatch.setattr(os, "rename", real_rename)
    monkeypatch.setattr(os, "replace", real_replace)

    train_method(smoke(steps=2), "sft", base, rollouts, out, init)
    assert json.loads((out / "train_meta.json").read_text())["steps"] == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_a_dead_runs_temporary_folder_is_removed_by_the_next_run(tmp_path, base, rollouts):
    pid = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )
    live = train.scratch_path(tmp_path / "sft")
    dead = live.with_name(re.sub(r"-\d+-([0-9a-f]{8})$", rf"-{pid}-\1", live.name))
    dead.mkdir()
    live.mkdir()  # this process's: left alone
    train_method(smoke(steps=1), "sft", base, rollouts, tmp_path / "sft", tmp_path / "inits" / "init")
    assert not dead.exists() and live.exists()


def test_lora_init_refuses_a_folder_it_did_not_write(tmp_path, base):
    folder = tmp_path / "mywork"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(TrainConfigError, match=re.escape(str(folder)) + ".*refusing"):
        make_lora_init(smoke(), base, folder, seed=42)
    assert (folder / "notes.txt").read_text() == "mine"


# --- last_good: the last finite weights, beside the adapter, at a path that exists ------


def _record_weights(monkeypatch) -> dict[int, dict[str, torch.Tensor]]:
    """Trainable LoRA weights at the start of every optimiser step, keyed by the steps done so far."""
    seen: dict[int, dict[str, torch.Tensor]] = {}
    step = trainer.MethodTrainer.training_step

    def recording(self, model, inputs, num_items_in_batch=None):
        done = self.state.global_step
        if done not in seen:
            unwrapped = self.accelerator.unwrap_model(self.model)
            seen[done] = {
                n.replace(".default", ""): p.detach().clone()
                for n, p in unwrapped.named_parameters()
                if p.requires_grad
            }
        return step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trainer.MethodTrainer, "training_step", recording)
    return seen


def _named_path(err: pytest.ExceptionInfo) -> Path:
    return Path(str(err.value).rsplit(" is in ", 1)[1])


def _assert_kept(folder: Path, want: dict[str, torch.Tensor]) -> None:
    got = lora_weights(folder)
    assert set(got) == set(want)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert all(torch.equal(got[k], want[k]) for k in got)


def _nan_loss_on_call(monkeypatch, call: int) -> None:
    calls = []
    real = losses.LOSSES["sft"]

    def nan_loss(logps, mask):
        loss, metrics = real(logps, mask)
        calls.append(1)
        return (loss * float("nan") if len(calls) == call else loss), metrics

    monkeypatch.setitem(losses.LOSSES, "sft", nan_loss)


def test_nan_loss_keeps_the_last_finite_weights_beside_a_finished_adapter(
    tmp_path, base, rollouts, monkeypatch
):
    out, init = tmp_path / "sft", tmp_path / "init"
    train_method(smoke(steps=1), "sft", base, rollouts, out, init)  # a previous finished adapter
    before = files_of(out)
    seen = _record_weights(monkeypatch)
    _nan_loss_on_call(monkeypatch, 3)
    with pytest.raises(TrainingDiverged, match="step 3") as err:
        train_method(smoke(steps=4), "sft", base, rollouts, out, init)
    kept = _named_path(err)
    assert kept == tmp_path / "sft.last_good" and kept.is_dir()
    _assert_kept(kept, seen[2])  # the weights after step 2, the last finite ones
    assert json.loads((kept / "last_good.json").read_text())["step"] == 2
    assert files_of(out) == before  # the finished adapter is untouched, nothing written inside it


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_a_nan_gradient_never_reaches_the_weights(tmp_path, base, rollouts, monkeypatch):
    seen = _record_weights(monkeypatch)
    calls = []
    real = losses.LOSSES["sft"]

    def nan_grad(logps, mask):
        loss, metrics = real(logps, mask)
        calls.append(1)
        return (_NanGradient.apply(loss) if len(calls) == 2 else loss), metrics

    monkeypatch.setitem(losses.LOSSES, "sft", nan_grad)
    with pytest.raises(TrainingDiverged, match="gradient at step 2") as err:
        train_method(smoke(steps=4), "sft", base, rollouts, tmp_path / "sft", tmp_path / "init")
    _assert_kept(_named_path(err), seen[1])


def test_weights_an_optimiser_step_made_non_finite_are_not_kept(tmp_path, base, rollouts, monkeypatch):
    seen = _record_weights(monkeypatch)
    recording = trainer.MethodTrainer.training_step

    def blow_up_after_step_2(self, model, inputs, num_items_in_batch=None):
        if self.state.global_step == 2:  # as if step 2's update had overflowed
            with torch.no_grad():
                next(p for p in self.model.parameters() if p.requires_grad).fill_(float("inf"))
        return recording(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trainer.MethodTrainer, "training_step", blow_up_after_step_2)
    with pytest.raises(TrainingDiverged, match="non-finite weights after step 2") as err:
        train_method(smoke(steps=4), "sft", base, rollouts, tmp_path / "sft", tmp_path / "init")
    _assert_kept(_named_path(err), seen[1])


def test_pipeline_names_a_last_good_that_outlives_the_stage(tmp_path, base, rollouts, monkeypatch):
    monkeypatch.setenv("WSG_RUNS", str(tmp_path / "runs"))
    stage = tmp_path / "rollouts-stage"
    stage.mkdir()
    (stage / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    monkeypatch.setattr(pipeline, "rollouts_stage", lambda profile: stage)
    monkeypatch.setattr(pipeline, "student_dir", lambda profile: str(base))
    _nan_loss_on_call(monkeypatch, 2)
    profile = smoke(steps=3)
    with pytest.raises(TrainingDiverged) as err:
        pipeline.adapter_stage(profile, "sft")
    kept = _named_path(err)
    assert kept.is_dir() and all(torch.isfinite(v).all() for v in lora_weights(kept).values())
    assert kept.parent == pipeline.run_root(profile) and not kept.name.startswith(".")
    assert not [p for p in kept.parent.iterdir() if p.name.startswith(".adapter")]  # stage scratch removed


# --- arguments and inputs are checked before the work; errors are one line ----------


def _no_stages(monkeypatch) -> None:
    def built(*args, **kwargs):
        raise AssertionError("a stage was built before the arguments were checked")

    for name in ("problems_stage", "base_stage", "student_dir", "rollouts_stage", "lora_init_dir"):
        monkeypatch.setattr(pipeline, name, built)


def _one_error_line(capsys, argv: list[str], main=train_cli.main) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_unknown_method_is_reported_before_any_stage(monkeypatch, capsys):
    _no_stages(monkeypatch)
    err = _one_error_line(capsys, ["--profile", "smoke", "--method", "ppo"])
    assert "--method" in err and "'ppo'" in err


def test_project_errors_are_one_line_and_debug_keeps_the_traceback(tmp_path, monkeypatch, capsys):
    _no_stages(monkeypatch)
    argv = ["--profile", "smoke", "--method", "dpo", "--control", "sft_seed"]
    err = _one_error_line(capsys, argv)
    assert err == "error: --control sft_seed is a variant of --method sft, not dpo\n"
    with pytest.raises(TrainConfigError):
        train_cli.main([*argv, "--debug"])
    monkeypatch.setenv("RANK", "1")  # another rank of a launch: the main rank prints the line
    assert _one_error_line(capsys, argv) == ""


def test_bad_out_rollouts_and_profile_fail_before_any_stage(tmp_path, monkeypatch, capsys):
    _no_stages(monkeypatch)
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    err = _one_error_line(capsys, ["--profile", "smoke", "--method", "sft", "--out", str(mine)])
    assert err.startswith("error: --out ") and str(mine) in err
    err = _one_error_line(capsys, ["--profile", "smoke", "--method", "sft", "--init", str(mine)])
    assert err.startswith("error: --init ") and str(mine) in err
    err = _one_error_line(capsys, ["--profile", "smoke", "--method", "sft", "--base", str(tmp_path / "none")])
    assert err.startswith("error: --base ")
    bad = tmp_path / "graded.jsonl"
    rows = make_rollouts(2, 2)
    rows[1]["reward"] = True
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = _one_error_line(capsys, ["--profile", "smoke", "--method", "sft", "--rollouts", str(bad)])
    assert f"{bad}:2" in err and "reward" in err
    raw = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    raw["train"]["lr"] = 0.0
    profile = tmp_path / "zero.yaml"
    profile.write_text(yaml.safe_dump(raw))
    err = _one_error_line(capsys, ["--profile", str(profile), "--method", "sft"])
    assert str(profile) in err and "train.lr" in err


@pytest.mark.parametrize("value", ["true", "false", "NaN", "Infinity"])
def test_rollout_rewards_must_be_finite_numbers(tmp_path, value):
    rows = [json.dumps(r) for r in make_rollouts(2, 2)]
    rows[2] = (
        rows[2].replace('"reward": 1.0', f'"reward": {value}').replace('"reward": 0.0', f'"reward": {value}')
    )
    path = tmp_path / "graded.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(RolloutError, match=re.escape(f"{path}:3: field `reward`")):
        read_rollouts(path)
    with pytest.raises(MethodDataError, match=re.escape(f"{path}:3: field `reward`")):
        load_rollouts(path)


def test_python_m_train_prints_one_error_line(tmp_path):
    """Under `python -m`, the errors train.py defines live in __main__: still ours, still one line."""
    cmd = [
        sys.executable,
        "-m",
        "helpers.train",
        "--profile",
        "smoke",
        "--method",
        "dpo",
        "--control",
        "sft_seed",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), WSG_RUNS=str(tmp_path))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: --control sft_seed is a variant of --method sft, not dpo"
    )
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def test_book_and_lr_sweep_check_their_arguments_first(monkeypatch, capsys):
    from helpers import book, lr_sweep

    def work(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(book, "execute", work)
    monkeypatch.setattr(lr_sweep, "sweep", work)
    assert _one_error_line(capsys, ["--profile", "nope"], book.main).startswith(
        "error: unknown profile 'nope'"
    )
    assert "--only" in _one_error_line(capsys, ["--profile", "smoke", "--only", "99"], book.main)
    sweep = ["--profile", "smoke", "--method", "sft", "--lrs"]
    assert "--lrs" in _one_error_line(capsys, [*sweep, "0,1e-3"], lr_sweep.main)
    assert "--lrs" in _one_error_line(capsys, [*sweep, "fast"], lr_sweep.main)
    assert "--method" in _one_error_line(capsys, ["--method", "ppo", "--lrs", "1e-3"], lr_sweep.main)
    err = _one_error_line(capsys, ["--profile", "nope", "--method", "sft", "--lrs", "1e-3"], lr_sweep.main)
    assert err.startswith("error: unknown profile 'nope'")
