"""The offline losses on tiny tensors whose expected values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import losses

LN2, LN4, LN08 = math.log(2.0), math.log(4.0), math.log(0.8)
# The losses run in float32 on terms of magnitude <= ~2 (logs of the token probabilities, rewards,
# advantages): a handful of float32 operations, so each result is off by a few ulps of ~1.
TOL = 16 * torch.finfo(torch.float32).eps
# DPO's per-sequence log-probs are ~ -10: their differences carry ulps of 10, times beta.
DPO_TOL = 16 * torch.finfo(torch.float32).eps * 16


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rollouts: token probs (0.5, 0.25) and (0.8,), the rest padding (logp 0, mask 0)."""
    logps = torch.tensor(
        [[math.log(0.5), math.log(0.25), 0.0], [math.log(0.8), 0.0, 0.0]], requires_grad=True
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return logps, mask


def test_sft_is_token_mean_nll() -> None:
    logps, mask = batch()
    loss, metrics = losses.sft(logps, mask)
    assert loss.item() == pytest.approx((LN2 + LN4 - LN08) / 3, abs=TOL)
    assert metrics["tokens"] == 3


def test_rft_keeps_only_correct_rollouts() -> None:
    logps, mask = batch()
    loss, metrics = losses.rft(logps, mask, reward=torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((LN2 + LN4) / 2, abs=TOL)
    assert metrics["kept_fraction"] == 0.5
    loss.backward()
    assert torch.all(logps.grad[1] == 0)  # the wrong rollout gets no gradient


def test_dft_weights_nll_by_token_probability() -> None:
    logps, mask = batch()
    loss, _ = losses.dft(logps, mask)
    expected = (0.5 * LN2 + 0.25 * LN4 - 0.8 * LN08) / 3
    assert loss.item() == pytest.approx(expected, abs=TOL)


def test_dft_weight_is_stop_gradient() -> None:
    logps, mask = batch()
    losses.dft(logps, mask)[0].backward()
    # d/dlogp [-logp * sg(p)] / n = -p / n; without the stop-gradient it would be -p (1 + logp) / n.
    expected = torch.tensor([[-0.5 / 3, -0.25 / 3, 0.0], [-0.8 / 3, 0.0, 0.0]])
    torch.testing.assert_close(logps.grad, expected)


def test_rift_published_form() -> None:
    logps, mask = batch()
    loss, metrics = losses.rift(logps, mask, reward=torch.tensor([1.0, -0.2]))
    # positive row: -1 * log p per token; negative row: -(-0.2) * p = 0.2 * 0.8
    assert loss.item() == pytest.approx((LN2 + LN4 + 0.2 * 0.8) / 3, abs=TOL)
    assert metrics["neg_fraction"] == 0.5
    loss.backward()
    # gradient of the negative branch w.r.t. log p is -r * p / n = 0.2 * 0.8 / 3
    assert logps.grad[1, 0].item() == pytest.approx(0.2 * 0.8 / 3, abs=TOL)
    assert logps.grad[0, 0].item() == pytest.approx(-1 / 3, abs=TOL)


def test_rift_negative_branch_is_bounded() -> None:
    # As a wrong rollout is suppressed (log p -> -inf), the naive -r log p loss goes to -inf;
    # RIFT's linear term stays in [0, |r|] and its gradient goes to 0 rather than blowing up.
    mask = torch.ones(1, 1)
    for logp in (0.0, -5.0, -50.0, -1000.0):
        x = torch.tensor([[logp]], requires_grad=True)
        loss, _ = losses.rift(x, mask, reward=torch.tensor([-0.2]))
        loss.backward()
        assert 0.0 <= loss.item() <= 0.2 + 1e-7
        assert math.isfinite(x.grad.item()) and 0.0 <= x.grad.item() <= 0.2 + 1e-7
    assert x.grad.item() == 0.0  # exp(-1000) underflows to 0: a fully suppressed token is left alone


def test_rift_paper_form() -> None:
    logps, mask = batch()
    loss, _ = losses.rift_paper(logps, mask, reward=torch.tensor([1.0, 0.0]), lam=0.5)
    assert loss.item() == pytest.approx((0.5 * (LN2 + LN4) - LN08) / 3, abs=TOL)


def test_grpo_paper_is_advantage_weighted_nll() -> None:
    logps, mask = batch()
    loss, _ = losses.grpo_paper(logps, mask, advantage=torch.tensor([0.6, -0.4]))
    assert loss.item() == pytest.approx((0.6 * (LN2 + LN4) - 0.4 * -LN08) / 3, abs=TOL)


def test_grpo_is_advantage_weighted_probability() -> None:
    logps, mask = batch()
    loss, _ = losses.grpo(logps, mask, advantage=torch.tensor([0.6, -0.4]))
    assert loss.item() == pytest.approx((-0.6 * (0.5 + 0.25) + 0.4 * 0.8) / 3, abs=TOL)
    loss.backward()
    # d/dlogp [-A p] / n = -A p / n
    assert logps.grad[0, 1].item() == pytest.approx(-0.6 * 0.25 / 3, abs=TOL)
    assert logps.grad[1, 0].item() == pytest.approx(0.4 * 0.8 / 3, abs=TOL)


def test_grpo_zero_advantage_contributes_nothing() -> None:
    logps, mask = batch()
    loss, _ = losses.grpo(logps, mask, advantage=torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logps.grad == 0)


def test_dpo_loss_by_hand() -> None:
    # chosen ratios (policy - reference) +1, -1, +2; rejected ratios -2, +1, -1; beta 0.1:
    # rewards chosen 0.1, -0.1, 0.2 and rejected -0.2, 0.1, -0.1; margins 0.3, -0.2, 0.3.
    # Nothing here is symmetric, so swapping chosen and rejected changes every number.
    loss, metrics = losses.dpo_loss(
        torch.tensor([-10.0, -12.0, -9.0]),
        torch.tensor([-13.0, -10.0, -12.0]),
        torch.tensor([-11.0, -11.0, -11.0]),
        torch.tensor([-11.0, -11.0, -11.0]),
        beta=0.1,
    )
    expected = (2 * math.log1p(math.exp(-0.3)) + math.log1p(math.exp(0.2))) / 3
    assert loss.item() == pytest.approx(expected, abs=TOL)
    assert metrics["rewards_accuracy"] == pytest.approx(2 / 3, abs=TOL)
    assert metrics["rewards_margin"] == pytest.approx(0.4 / 3, abs=DPO_TOL)
    assert metrics["rewards_chosen"] == pytest.approx(0.2 / 3, abs=DPO_TOL)
    assert metrics["rewards_rejected"] == pytest.approx(-0.2 / 3, abs=DPO_TOL)
    assert metrics["logps_chosen"] == pytest.approx(-31 / 3, abs=DPO_TOL)
    assert metrics["logps_rejected"] == pytest.approx(-35 / 3, abs=DPO_TOL)


def test_dpo_gradient_pushes_chosen_up() -> None:
    chosen = torch.tensor([-10.0], requires_grad=True)
    rejected = torch.tensor([-10.0], requires_grad=True)
    loss, _ = losses.dpo_loss(chosen, rejected, torch.tensor([-10.0]), torch.tensor([-10.0]), beta=0.1)
    loss.backward()
    # d/dx -log sigmoid(beta (x - y)) at margin 0 = -beta / 2
    assert chosen.grad.item() == pytest.approx(-0.05, abs=TOL)
    assert rejected.grad.item() == pytest.approx(0.05, abs=TOL)


def test_dpo_wrapper_sums_tokens_of_chosen_then_rejected_rows() -> None:
    # rows 0-1 chosen, rows 2-3 rejected (TRL's layout); masked tokens (-9) must not count
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -9.0], [-3.0, -9.0], [-1.0, -4.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]])
    ref_chosen, ref_rejected = torch.tensor([-2.0, -1.0]), torch.tensor([-4.0, -4.0])
    loss, metrics = losses.dpo(logps, mask, ref_chosen, ref_rejected, beta=1.0)
    # sums: chosen -3, -0.5 (ratios -1, +0.5); rejected -3, -5 (ratios +1, -1); margins -2, +1.5
    expected = (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.5))) / 2
    assert loss.item() == pytest.approx(expected, abs=TOL)
    assert metrics["logps_chosen"] == pytest.approx(-1.75, abs=TOL)
    assert metrics["logps_rejected"] == pytest.approx(-4.0, abs=TOL)
    assert metrics["rewards_accuracy"] == 0.5


def test_registry_covers_every_method() -> None:
    from helpers.profiles import CONTRASTIVE, METHODS, VARIANTS

    assert set(losses.LOSSES) == set(METHODS + VARIANTS + CONTRASTIVE) == set(losses.LOSS_COLUMNS)


def test_bad_inputs_raise_clear_errors() -> None:
    logps, mask = batch()
    with pytest.raises(losses.LossInputError, match="reward"):
        losses.rft(logps, mask, reward=None)
    with pytest.raises(losses.LossInputError, match=r"\(B, T\)"):
        losses.sft(logps, mask[:, :2])
    with pytest.raises(losses.LossInputError, match="advantage"):
        losses.grpo(logps, mask, advantage=torch.zeros(3))
    with pytest.raises(losses.LossInputError, match="2P rows"):
        losses.dpo(logps[:1], mask[:1], torch.zeros(1), torch.zeros(1), beta=0.1)
    assert issubclass(losses.LossInputError, ValueError)
