"""Profiles: the three shipped ones load, the paper one holds the study's settings, bad YAML fails clearly."""

import re
from pathlib import Path

import pytest
import yaml

from helpers.profiles import PROFILE_DIR, ProfileError, available_profiles, load_profile


@pytest.mark.parametrize("name", ["smoke", "tiny", "paper"])
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name
    assert set(profile.train.methods) >= {"sft", "rft", "dft", "rift", "grpo", "dpo"}


def test_paper_profile_holds_the_study_settings():
    p = load_profile("paper")
    assert p.model.student == "Qwen/Qwen3-4B-Instruct-2507"
    assert (p.lora.r, p.lora.alpha, p.lora.dropout) == (32, 64, 0.0)
    assert p.lora.targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert p.train.lr_for("sft") == 5e-6 and p.train.lr_for("dpo") == 5e-7
    assert p.train.batch_size * p.train.grad_accum == 32
    assert (p.train.scheduler, p.train.warmup_ratio, p.train.weight_decay, p.train.max_grad_norm) == (
        "cosine",
        0.05,
        0.01,
        1.0,
    )
    assert p.train.beta == 0.1 and p.seed == 42 and p.train.bf16 and p.rollouts.k == 4
    assert p.data.train_source == "agentica-org/DeepScaleR-Preview-Dataset"


def test_unknown_profile_names_the_choices():
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*smoke"):
        load_profile("nope")
    assert available_profiles() == ["paper", "smoke", "tiny"]


def _edited(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((PROFILE_DIR / "tiny.yaml").read_text())
    edit(raw)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_missing_key_names_file_and_field(tmp_path):
    path = _edited(tmp_path, lambda r: r["lora"].pop("alpha"))
    with pytest.raises(ProfileError, match=re.escape(str(path)) + ".*missing key `lora.alpha`"):
        load_profile(path)


def test_unknown_key_names_file_and_field(tmp_path):
    path = _edited(tmp_path, lambda r: r["train"].update(learning_rate=1.0))
    with pytest.raises(ProfileError, match="custom.yaml.*unknown key.*train.learning_rate"):
        load_profile(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["train"].update(steps="many"), "train.steps"),
        (lambda r: r["lora"].update(targets="q_proj"), "lora.targets"),
        (lambda r: r["train"].update(methods=["sft", "ppo"]), "unknown method"),
        (lambda r: r["rollouts"].update(k=1), "rollouts.k"),
        (lambda r: r.update(model=[1, 2]), "model"),
    ],
)
def test_bad_values_are_rejected(tmp_path, edit, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(_edited(tmp_path, edit))


def test_custom_yaml_round_trips(tmp_path):
    path = _edited(tmp_path, lambda r: r["train"].update(steps=7, result_step=7, save_steps=[3]))
    assert load_profile(path).train.steps == 7
    assert load_profile(path).to_dict()["train"]["steps"] == 7


def _set(section, key, value):
    def edit(raw):
        (raw if section is None else raw[section])[key] = value

    return edit


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "lr", 0.0),
        ("train", "lr", -1e-4),
        ("train", "lr", float("nan")),
        ("train", "warmup_ratio", 1.0),
        ("train", "warmup_ratio", -0.1),
        ("train", "weight_decay", -0.01),
        ("train", "max_grad_norm", 0.0),
        ("train", "beta", 0.0),
        ("train", "scheduler", "cosyne"),
        ("train", "log_every", 0),
        ("train", "online_grpo_steps", 0),
        ("train", "seed", -1),
        ("train", "controls", ["sft_order", "ppo_control"]),
        ("train", "methods", []),
        ("rollouts", "temperature", 0.0),
        ("rollouts", "top_p", 0.0),
        ("rollouts", "top_p", 1.5),
        ("rollouts", "max_new_tokens", 0),
        ("rollouts", "batch_size", 0),
        ("lora", "r", 0),
        ("lora", "alpha", 0),
        ("lora", "dropout", 1.0),
        ("lora", "dropout", -0.1),
        ("lora", "targets", []),
        ("model", "device", "gpu"),
        ("model", "dtype", "float16"),
        ("model", "max_length", 0),
        ("model", "hidden_size", 0),
        ("model", "pretrain_lr", 0.0),
        ("model", "student_accuracy", 1.5),
        ("data", "n_train_prompts", 0),
        ("data", "n_eval_problems", 0),
        ("analysis", "lmc_points", 1),
        ("analysis", "principal_k", 0),
        (None, "seed", -3),
    ],
)
def test_out_of_range_values_name_file_and_field(tmp_path, section, key, value):
    path = _edited(tmp_path, _set(section, key, value))
    field = key if section is None else f"{section}.{key}"
    with pytest.raises(ProfileError, match=re.escape(str(path)) + f".*`{re.escape(field)}`"):
        load_profile(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dpo": 0.0}, "train.lr_overrides.dpo` must be > 0"),
        ({"dpo": -3e-5}, "train.lr_overrides.dpo` must be > 0"),
        ({"ppo": 1e-5}, "train.lr_overrides.ppo` is not a method"),
        ({"dpo": True}, "train.lr_overrides"),
    ],
)
def test_learning_rate_overrides_are_checked(tmp_path, overrides, message):
    path = _edited(tmp_path, lambda r: r["train"].update(lr_overrides=overrides))
    with pytest.raises(ProfileError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        load_profile(path)


def test_hub_models_need_no_tiny_architecture():
    paper = load_profile("paper")  # hidden_size etc. are 0 there: only the tiny models use them
    assert paper.model.hidden_size == 0 and paper.model.student != "tiny"


def test_profile_records_its_file_and_content():
    import dataclasses
    import hashlib

    from helpers.profiles import profile_source

    smoke = load_profile("smoke")
    path = PROFILE_DIR / "smoke.yaml"
    assert profile_source(smoke) == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert profile_source(dataclasses.replace(smoke, seed=1)) is None  # changed in code: no file holds it
    assert "_source" not in smoke.to_dict()  # cache keys do not depend on where the file lives
