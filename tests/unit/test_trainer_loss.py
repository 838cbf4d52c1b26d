"""MethodTrainer.compute_loss against helpers.losses on a hand-built batch, and the DPO reference pass.

The batch has known prompt/completion boundaries and right padding. The expected values
never go through the trainer's shift convention: each row runs alone (no padding) through
the model, the log-probs of its completion tokens are picked by hand and laid out
left-aligned, and `helpers.losses.LOSSES[method]` scores them (every loss is a sum or mean
over a row's completion tokens, so where they sit in the row does not matter).
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from helpers import losses
from helpers.trainer import MethodCollator, MethodTrainer, reference_logps, tokenize_dataset
from tests.builders import make_adapter, make_model

VOCAB, PAD, EOS = 40, 0, 1
EPS32 = torch.finfo(torch.float32).eps
# Log-probs of ~ -log(40) ~ -3.7 in float32, from a padded batch and from single rows:
# a few ulps of ~4 apart. Token means inherit that; DPO sums ~10 of them and scales by beta.
LOGP_TOL = 64 * EPS32 * 4
SUM_TOL = 64 * EPS32 * 40

# (prompt ids, completion ids) with different lengths on both sides, so rows are padded
ROWS = [
    ([5, 6, 7, 8], [9, 10, 11]),
    ([12, 13, 14, 15, 16, 17], [18, 19]),
    ([20, 21, 22], [23, 24, 25, 26, 27]),
    ([28, 29, 30, 31, 32], [33]),
]
COLUMNS = {
    "reward": torch.tensor([1.0, 0.0, 1.0, 0.0]),
    "advantage": torch.tensor([0.6, -0.4, 0.1, -0.3]),
}
SIGNED_REWARD = torch.tensor([1.0, -0.2, 1.0, -0.2])  # rift reads the published signed reward
HPARAMS = {"rift_paper": {"lam": 0.5}, "dpo": {"beta": 0.1}}


def hand_row(prompt: list[int], completion: list[int]) -> dict[str, list[int]]:
    """input_ids and completion_mask as tokenize_pair lays them out: prompt, completion, EOS."""
    ids = prompt + completion + [EOS]
    return {"input_ids": ids, "completion_mask": [0] * len(prompt) + [1] * (len(completion) + 1)}


def models(seed: int = 3):
    """A LoRA-wrapped tiny model with random (non-zero) B, and the same base without an adapter."""
    base = make_model(VOCAB, tie_word_embeddings=False, seed=seed)
    plain = make_model(VOCAB, tie_word_embeddings=False, seed=seed)
    return make_adapter(base, seed=seed + 1, scale=0.3), plain


@torch.no_grad()
def completion_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log p(token | prefix) of each completion token and the EOS, from the row alone (no padding)."""
    ids = torch.tensor([prompt + completion + [EOS]])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    # the token at position j is predicted from position j - 1
    return torch.stack([logp[j - 1, ids[0, j]] for j in range(len(prompt), ids.shape[1])])


def left_aligned(per_row: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max_len) log-probs and mask, each row's completion log-probs first, zeros after."""
    width = max(len(r) for r in per_row)
    logps = torch.zeros(len(per_row), width, dtype=torch.float32)
    mask = torch.zeros(len(per_row), width, dtype=torch.long)
    for i, r in enumerate(per_row):
        logps[i, : len(r)] = r.float()
        mask[i, : len(r)] = 1
    return logps, mask


def trainer_for(model, method: str, tmp_path) -> MethodTrainer:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    return MethodTrainer(
        model=model,
        args=args,
        method=method,
        hparams=HPARAMS.get(method, {}),
        last_good_dir=tmp_path / "last_good",
    )


def method_columns(method: str) -> dict[str, torch.Tensor]:
    names = losses.LOSS_COLUMNS[method]
    return {n: SIGNED_REWARD if method == "rift" and n == "reward" else COLUMNS[n] for n in names}


def sft_style_batch(method: str) -> dict[str, torch.Tensor]:
    rows = [
        dict(hand_row(p, c), **{k: float(v[i]) for k, v in method_columns(method).items()})
        for i, (p, c) in enumerate(ROWS)
    ]
    return MethodCollator(PAD)(rows)


def shifted(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with every completion mask moved one token to the right."""
    out = dict(batch)
    mask = torch.zeros_like(batch["completion_mask"])
    mask[:, 1:] = batch["completion_mask"][:, :-1]
    out["completion_mask"] = mask * batch["attention_mask"]
    return out


# two-block methods (DPO and the contrastive family) lay out chosen/rejected blocks; DPO is tested below
NLL_STYLE = [m for m in losses.LOSSES if m not in losses.BLOCKS]


def expected_and_tol(method: str, logps: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """LOSSES[method] on the hand-laid log-probs, and how far a LOGP_TOL error in every log-prob
    can move it (first order: LOGP_TOL * sum |d loss / d logp|, e.g. 1 for a token mean NLL, the
    mean token probability for DFT), plus float32 rounding of the loss itself."""
    x = logps.clone().requires_grad_(True)
    loss, _ = losses.LOSSES[method](x, mask, **method_columns(method), **HPARAMS.get(method, {}))
    loss.backward()
    return loss.item(), LOGP_TOL * float(x.grad.abs().sum()) + 16 * EPS32 * abs(loss.item())


@pytest.mark.parametrize("method", NLL_STYLE)
def test_compute_loss_matches_losses_on_a_hand_built_batch(tmp_path, method: str) -> None:
    model, _ = models()
    trainer = trainer_for(model, method, tmp_path)
    batch = sft_style_batch(method)
    assert (batch["attention_mask"] == 0).any()  # right padding is part of the test
    per_row = [completion_logps(trainer.model, p, c) for p, c in ROWS]
    want, tol = expected_and_tol(method, *left_aligned(per_row))
    # one micro-batch: num_items_in_batch absent, or the batch's own completion tokens
    got = trainer.compute_loss(trainer.model, batch, num_items_in_batch=None)
    assert got.item() == pytest.approx(want, abs=tol)
    if method != "rft":  # rft's tokens are its kept rows' only; the others count every completion token
        own = torch.tensor(sum(len(r) for r in per_row))
        again = trainer.compute_loss(trainer.model, batch, num_items_in_batch=own)
        assert again.item() == pytest.approx(want, abs=tol)
    # the check has power: a completion mask one token off gives another loss
    off = trainer.compute_loss(trainer.model, shifted(batch), num_items_in_batch=None)
    assert abs(off.item() - want) > 100 * tol


def test_compute_loss_dpo_matches_losses(tmp_path) -> None:
    model, _ = models()
    trainer = trainer_for(model, "dpo", tmp_path)
    # pairs (chosen, rejected) of one prompt each: rows 0/1 and 2/3 of ROWS share nothing, which
    # does not matter to the loss; the reference sums are made up
    pairs = [(ROWS[0], ROWS[1]), (ROWS[2], ROWS[3])]
    ref_chosen, ref_rejected = torch.tensor([-9.0, -20.0]), torch.tensor([-8.0, -3.0])
    rows = []
    for i, (chosen, rejected) in enumerate(pairs):
        c, r = hand_row(*chosen), hand_row(*rejected)
        rows.append(
            {
                "chosen_input_ids": c["input_ids"],
                "chosen_completion_mask": c["completion_mask"],
                "rejected_input_ids": r["input_ids"],
                "rejected_completion_mask": r["completion_mask"],
                "ref_chosen_logps": float(ref_chosen[i]),
                "ref_rejected_logps": float(ref_rejected[i]),
            }
        )
    batch = MethodCollator(PAD, dpo=True)(rows)
    policy_chosen = torch.stack([completion_logps(trainer.model, *c).sum() for c, _ in pairs]).float()
    policy_rejected = torch.stack([completion_logps(trainer.model, *r).sum() for _, r in pairs]).float()
    want, _ = losses.dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    # d loss / d (a sequence sum) is at most beta / 2 / pairs: the sums' error, scaled down
    tol = SUM_TOL * 0.1 + 16 * EPS32 * abs(want.item())
    got = trainer.compute_loss(trainer.model, batch)
    assert got.item() == pytest.approx(want.item(), abs=tol)
    off = trainer.compute_loss(trainer.model, shifted(batch))
    assert abs(off.item() - want.item()) > 100 * tol


def test_dpo_reference_is_the_base_model_with_a_nonzero_adapter(tmp_path) -> None:
    # At the LoRA init B = 0 and the adapter is a no-op, so a reference pass that forgot to
    # disable it would still look right; here B is random, so it would not.
    model, plain = models(seed=5)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    words = [f"w{i}" for i in range(VOCAB)]

    class Tok:  # the ids are the words' indices; just enough tokenizer for tokenize_pair
        eos_token_id = EOS

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [words.index(w) for w in text.split()]}

    pairs = [
        {"prompt": "w5 w6 w7", "chosen": "w8 w9", "rejected": "w10 w11 w12"},
        {"prompt": "w13 w14 w15 w16", "chosen": "w17", "rejected": "w18 w19"},
        {"prompt": "w20 w21", "chosen": "w22 w23 w24", "rejected": "w25"},
    ]
    ds = tokenize_dataset(Dataset.from_list(pairs), Tok(), "dpo", max_length=32)
    model.train()
    ref = reference_logps(model, ds, MethodCollator(PAD, dpo=True), batch_size=2, device="cpu")

    def ids(text):
        return [words.index(w) for w in text.split()]

    for key, side in (("ref_chosen_logps", "chosen"), ("ref_rejected_logps", "rejected")):
        base = [float(completion_logps(plain, ids(p["prompt"]), ids(p[side])).sum()) for p in pairs]
        adapted = [float(completion_logps(model, ids(p["prompt"]), ids(p[side])).sum()) for p in pairs]
        assert ref[key] == pytest.approx(base, abs=SUM_TOL), key
        # the adapter really changes these log-probs, so the check above can fail
        assert max(abs(a - b) for a, b in zip(adapted, base, strict=True)) > 100 * SUM_TOL
    assert model.training  # the pass restored the mode it found
