"""The knobs a reader wants to see first, as a two-column table (chapter 00)."""

from __future__ import annotations

from .profiles import Profile


def profile_table(profile: Profile):
    """The knobs a reader wants to see first, as a two-column table."""
    import pandas as pd

    m, d, r, lo, t = profile.model, profile.data, profile.rollouts, profile.lora, profile.train
    rows = {
        "student": m.student
        if m.student != "tiny"
        else f"tiny Qwen3 (hidden {m.hidden_size}, {m.num_layers} layers)",
        "teacher": m.rollouts_file
        or (m.teacher if m.teacher != "tiny" else f"tiny Qwen3, {m.teacher_steps} steps"),
        "prompts (train / eval)": f"{d.train_source} x {d.n_train_prompts} / {d.eval_source} x {d.n_eval_problems}",
        "rollouts per prompt": f"K={r.k} at temperature {r.temperature}",
        "LoRA": f"r={lo.r}, alpha={lo.alpha}, on {', '.join(lo.targets)}",
        "learning rate": f"{t.lr:g} (DPO {t.lr_for('dpo'):g}), {t.scheduler}, warmup {t.warmup_ratio:.0%}",
        "batch x steps": f"{t.batch_size * t.grad_accum} x {t.steps}, read at step {t.result_step}",
        "seed / dtype": f"{profile.seed} / {'bf16' if t.bf16 else m.dtype}",
    }
    return pd.DataFrame({"setting": list(rows), "value": list(rows.values())}).set_index("setting")
