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
