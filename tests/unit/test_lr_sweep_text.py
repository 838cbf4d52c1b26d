"""helpers.lr_sweep: the rule that picks a rate from the sweep, and chapter 02's account of it."""

from __future__ import annotations

import dataclasses

from helpers.lr_sweep import learns, pick_rate, sweep_markdown
from helpers.profiles import load_profile


def row(lr, acc, lo, hi, base=0.6, **extra):
    return {"lr": lr, "accuracy": acc, "ci_low": lo, "ci_high": hi, "base_accuracy": base, **extra}


def dpo_row(lr, acc, margin_low, margin=0.5, hi=None):
    return row(
        lr,
        acc,
        acc - 0.08,
        acc + 0.08 if hi is None else hi,
        reward_margin=margin,
        margin_ci_low=margin_low,
        margin_ci_high=margin + 0.2,
        reward_accuracy=0.7,
        pairs=90,
        norm=0.2,
        noise_norm=0.01,
        passes=18.0,
        rows=89,
    )


def test_dpo_learns_only_with_a_margin_above_zero_and_accuracy_not_below_the_base():
    assert learns(dpo_row(1e-4, 0.62, 0.1))
    assert not learns(dpo_row(1e-4, 0.62, -0.01))  # margin interval reaches 0
    assert not learns(dpo_row(3e-4, 0.45, 0.3, hi=0.55))  # accuracy below the base beyond its interval
    assert learns(row(1e-3, 0.7, 0.6, 0.8)) and not learns(row(1e-3, 0.6, 0.5, 0.7))


def test_pick_rate_is_the_most_accurate_that_learns():
    rows = [dpo_row(1e-5, 0.64, -0.1), dpo_row(1e-4, 0.62, 0.1), dpo_row(3e-4, 0.61, 0.2, margin=0.9)]
    assert pick_rate(rows)["lr"] == 1e-4  # 1e-5 is more accurate but has not learned the preference
    tie = [dpo_row(1e-4, 0.62, 0.1, margin=0.3), dpo_row(3e-4, 0.62, 0.1, margin=0.9)]
    assert pick_rate(tie)["lr"] == 3e-4  # equal accuracy: the larger margin
    assert pick_rate([dpo_row(1e-5, 0.6, -0.1)]) is None


def test_sweep_markdown_says_whether_the_profile_uses_the_pick():
    profile = load_profile("tiny")
    t = profile.train
    sweep = {
        "methods": {
            "sft": [row(t.lr / 3, 0.5, 0.4, 0.6), row(t.lr, 0.8, 0.7, 0.9), row(t.lr * 3, 0.7, 0.6, 0.8)],
            "dpo": [dpo_row(t.lr_for("dpo"), 0.62, 0.1), dpo_row(t.lr_for("dpo") * 10, 0.64, -0.05)],
        }
    }
    text = sweep_markdown(sweep, profile)
    assert f"**sft**: the sweep picks {t.lr:g} (accuracy 80.0%" in text
    assert f"the profile uses {t.lr:g}." in text
    assert f"**dpo**: the sweep picks {t.lr_for('dpo'):g}" in text and "20.0x the noise norm" in text
    assert "18.0 passes over its 89 rows" in text and "reward margin 0.500 [0.100, 0.700]" in text
    assert "not the sweep's pick" not in text
    other = dataclasses.replace(profile, train=dataclasses.replace(t, lr=t.lr * 3))
    text = sweep_markdown(sweep, other)
    assert f"the profile uses {t.lr * 3:g} (accuracy 70.0%" in text and "not the sweep's pick" in text
    assert "intervals overlap" in text  # 0.6-0.8 against the pick's 0.7-0.9
    apart = dataclasses.replace(profile, train=dataclasses.replace(t, lr=t.lr / 3))
    assert "not the sweep's pick." in sweep_markdown(sweep, apart)  # 0.4-0.6 against 0.7-0.9
    lost = {
        "methods": {"sft": [row(t.lr, 0.5, 0.4, 0.6, norm=2.0)], "dpo": [dpo_row(t.lr_for("dpo"), 0.6, -0.1)]}
    }
    text = sweep_markdown(lost, profile)
    assert "**sft**: no swept rate learns" in text and "not the sweep's pick" not in text
    assert f"the profile uses {t.lr_for('dpo'):g} (accuracy 60.0%" in text
    assert f"10.0x smaller than SFT's at {t.lr:g}" in text  # 2.0 / 0.2
    unswept = dataclasses.replace(profile, train=dataclasses.replace(t, lr=0.5))
    assert "the profile's 0.5 was not swept" in sweep_markdown(sweep, unswept)
