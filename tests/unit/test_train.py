"""The training entry point: LoRA-only updates, one shared init, reloadable adapters, errors, DDP, paper shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from helpers import losses, train
from helpers.method_data import MethodDataError
from helpers.profiles import load_profile
from helpers.train import TrainConfigError, TrainingDiverged, make_lora_init, train_method
from tests.builders import make_rollouts, save_base

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two shared cores: OpenMP's thread handshakes cost more than tiny matmuls, so use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_base(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def rollouts() -> list[dict]:
    return make_rollouts(6, 4)


def smoke(steps: int = 2, **train_overrides):
    profile = load_profile("smoke")
    return dataclasses.replace(
        profile,
        train=dataclasses.replace(
            profile.train, steps=steps, result_step=steps, save_steps=(), **train_overrides
        ),
    )


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_moves_lora_weights_only(tmp_path, base, rollouts) -> None:
    before = sha(base / "model.safetensors")
    out = train_method(smoke(), "sft", base, rollouts, tmp_path / "sft", tmp_path / "init")
    init, trained = adapter(tmp_path / "init"), adapter(out)
    assert set(init) == set(trained) and all("lora_" in k for k in trained)
    assert all(
        torch.count_nonzero(v) == 0 for k, v in init.items() if "lora_B" in k
    )  # PEFT: B starts at zero
    assert all(torch.count_nonzero(trained[k]) > 0 for k in trained if "lora_B" in k)
    assert any(not torch.equal(init[k], trained[k]) for k in trained if "lora_A" in k)
    assert sha(base / "model.safetensors") == before
    tokenizer, model = train._load(smoke(), base, tmp_path / "init")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["method"] == "sft" and meta["steps"] == 2 and meta["lr"] == 1e-3
    assert meta["examples_seen"] == 16 and meta["epochs"] == pytest.approx(16 / 24)
    log = json.loads((out / "training_log.json").read_text())
    assert [row["step"] for row in log] == [1, 2]
    assert {"loss", "grad_norm", "lr", "nll", "tokens"} <= set(log[0])
    assert not list(tmp_path.glob(".sft.tmp*"))  # the temporary folder was renamed away


def test_every_method_starts_from_the_same_init(tmp_path, base, rollouts, monkeypatch) -> None:
    profile = smoke()
    seed = profile.lora.init_seed
    first = make_lora_init(profile, base, tmp_path / "a", seed=seed)
    again = make_lora_init(profile, base, tmp_path / "b", seed=seed)
    other = make_lora_init(profile, base, tmp_path / "c", seed=seed + 1)
    a, b, c = adapter(first), adapter(again), adapter(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)
    with pytest.raises(TrainConfigError, match="holds a LoRA init"):
        make_lora_init(profile, base, tmp_path / "a", seed=7)

    # What each method's trainer starts from is the saved init, bit for bit (DPO after its
    # reference pass, too): record the LoRA weights as training begins, then stop.
    class Started(Exception):
        pass

    started = {}

    def record(self, *args, **kwargs):
        state = self.accelerator.unwrap_model(self.model).state_dict()
        started[self.method] = {
            k.replace(".default", ""): v.clone() for k, v in state.items() if "lora_" in k
        }
        raise Started

    monkeypatch.setattr(train.MethodTrainer, "train", record)
    for method in ("sft", "dpo", "grpo"):
        with pytest.raises(Started):
            train_method(profile, method, base, rollouts, tmp_path / method, first)
        assert set(started[method]) == set(a), method
        assert all(torch.equal(started[method][k], a[k]) for k in a), method


def test_saved_adapter_reloads_with_the_same_logits(tmp_path, base, rollouts, monkeypatch) -> None:
    trained = {}
    finish = train._finish

    def keep(tmp, out_dir, model, log_history, meta):
        trained["model"] = model
        finish(tmp, out_dir, model, log_history, meta)

    monkeypatch.setattr(train, "_finish", keep)
    out = train_method(smoke(), "rift", base, rollouts, tmp_path / "rift", tmp_path / "init")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    plain = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        want = trained["model"].eval()(input_ids=ids).logits
        got = reloaded.eval()(input_ids=ids).logits
        untouched = plain(input_ids=ids).logits
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, untouched)


def test_preflight_errors_come_before_any_loading(tmp_path, base, rollouts) -> None:
    wrong_only = [dict(r, reward=0.0) for r in rollouts]
    with pytest.raises(MethodDataError, match="no correct rollout"):
        train_method(smoke(), "rft", base, wrong_only, tmp_path / "o", tmp_path / "init")
    with pytest.raises(MethodDataError, match="no \\(correct, incorrect\\) pair"):
        train_method(smoke(), "dpo", base, wrong_only, tmp_path / "o", tmp_path / "init")
    with pytest.raises(MethodDataError, match="single reward"):
        train_method(smoke(), "grpo", base, wrong_only, tmp_path / "o", tmp_path / "init")
    with pytest.raises(MethodDataError, match="unknown method"):
        train_method(smoke(), "ppo", base, rollouts, tmp_path / "o", tmp_path / "init")
    no_reward = [{k: v for k, v in r.items() if k != "reward"} for r in rollouts]
    with pytest.raises(MethodDataError, match="has no `reward`"):
        train_method(smoke(), "sft", base, no_reward, tmp_path / "o", tmp_path / "init")
    with pytest.raises(TrainConfigError, match="variant of --method sft"):
        train_method(smoke(), "dpo", base, rollouts, tmp_path / "o", tmp_path / "init", control="sft_seed")
    assert not (tmp_path / "init").exists() and not (tmp_path / "o").exists()


def test_nan_loss_raises_and_keeps_last_good(tmp_path, base, rollouts, monkeypatch) -> None:
    calls = []
    real = losses.LOSSES["sft"]

    def nan_on_third_call(logps, mask):
        loss, metrics = real(logps, mask)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), metrics

    monkeypatch.setitem(losses.LOSSES, "sft", nan_on_third_call)
    out = tmp_path / "sft"
    with pytest.raises(TrainingDiverged, match="step 3"):
        train_method(smoke(steps=4), "sft", base, rollouts, out, tmp_path / "init")
    last_good = tmp_path / "sft.last_good"  # beside the adapter folder, never inside it
    good = adapter(last_good)
    assert all(torch.isfinite(v).all() for v in good.values())
    assert any(
        torch.count_nonzero(v) > 0 for k, v in good.items() if "lora_B" in k
    )  # two good steps were taken
    assert [row["step"] for row in json.loads((last_good / "training_log.json").read_text())] == [
        1,
        2,
    ]
    assert not (out / "train_meta.json").exists() and not list(tmp_path.glob(".sft.tmp*"))


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "train_meta.json").read_text())


def test_controls(tmp_path, base, rollouts) -> None:
    profile = smoke(steps=1)
    init = tmp_path / "init"
    order = meta_of(train_method(profile, "sft", base, rollouts, tmp_path / "o", init, control="sft_order"))
    assert order["data_seed"] == profile.train.seed + 1 and order["init_dir"] == str(init)

    seed = meta_of(train_method(profile, "sft", base, rollouts, tmp_path / "s", init, control="sft_seed"))
    assert seed["init_dir"] == str(tmp_path / "init-seed43")
    a, b = adapter(init), adapter(tmp_path / "init-seed43")
    assert all(not torch.equal(a[k], b[k]) for k in a if "lora_A" in k)

    dpo = meta_of(train_method(profile, "dpo", base, rollouts, tmp_path / "d", init))
    same = meta_of(train_method(profile, "dpo", base, rollouts, tmp_path / "d2", init, control="dpo_samelr"))
    assert dpo["lr"] == profile.train.lr_for("dpo") and same["lr"] == profile.train.lr != dpo["lr"]
    assert len(list(tmp_path.glob("dpo_ref_logps-*"))) == 1  # reference log-probs computed once per data set


@pytest.mark.slow
def test_online_grpo_control(tmp_path, base, rollouts) -> None:
    pytest.importorskip("helpers.data")
    profile = smoke(steps=1)
    profile = dataclasses.replace(profile, rollouts=dataclasses.replace(profile.rollouts, max_new_tokens=16))
    out = train_method(
        profile, "grpo", base, rollouts, tmp_path / "online", tmp_path / "init", control="online_grpo"
    )
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["control"] == "online_grpo" and meta["steps"] == profile.train.online_grpo_steps
    assert set(adapter(out)) == set(adapter(tmp_path / "init"))


def first_traceback(text: str, limit: int = 3000) -> str:
    """The first Python traceback in a launcher's output (the rank that failed first), else the tail."""
    start = text.find("Traceback (most recent call last)")
    return text[start : start + limit] if start >= 0 else text[-limit:]


@pytest.mark.slow
def test_two_process_cpu_launch(tmp_path, base, rollouts) -> None:
    # `accelerate launch --cpu --num_processes 2` runs ONE process (accelerate's simple launcher needs mpirun
    # for several CPU processes); --multi_gpu on a machine without GPUs gives two torchrun processes on gloo.
    data = tmp_path / "rollouts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    # Port 0: accelerate picks a free port when it launches. A fixed port is shared by every test
    # session on the machine; two sessions launching at once both find it free, and one's ranks
    # can join the other's rendezvous store, then lose it ("Connection closed by peer").
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", "0"]
    cmd += ["-m", "helpers.train", "--profile", "smoke", "--method", "dpo", "--base", str(base)]
    cmd += ["--rollouts", str(data), "--out", str(tmp_path / "out"), "--init", str(tmp_path / "init")]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, first_traceback(done.stderr) + "\n...\n" + done.stderr[-2000:]
    meta = json.loads((tmp_path / "out" / "train_meta.json").read_text())
    assert meta["processes"] == 2 and meta["steps"] == 4
    assert any(torch.count_nonzero(v) > 0 for k, v in adapter(tmp_path / "out").items() if "lora_B" in k)


@pytest.mark.slow
def test_paper_profile_code_path_on_cpu(tmp_path) -> None:
    paper = load_profile("paper")
    # only what the CPU forces: fp32, a short context, one small step
    profile = dataclasses.replace(
        paper,
        model=dataclasses.replace(paper.model, dtype="float32", max_length=48),
        train=dataclasses.replace(
            paper.train,
            steps=1,
            result_step=1,
            save_steps=(),
            batch_size=2,
            grad_accum=1,
            bf16=False,
            log_every=1,
        ),
    )
    assert (profile.lora.r, profile.lora.alpha, profile.lora.targets) == (
        32,
        64,
        ("q_proj", "k_proj", "v_proj", "o_proj"),
    )
    base = save_base(
        tmp_path / "qwen3-4b-shapes",
        hidden_size=2560,
        num_layers=1,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=9728,
    )
    rollouts = make_rollouts(4, 4)
    for method in profile.train.methods:
        out = train_method(profile, method, base, rollouts, tmp_path / method, tmp_path / "init")
        weights = adapter(out)
        assert weights["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (32, 2560)
        assert weights["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].shape == (
            8 * 128,
            32,
        )
        assert json.loads((out / "train_meta.json").read_text())["steps"] == 1, method
