"""The offline training losses: per-token log-probs and a completion mask in, `(loss, metrics)` out.

Every function is pure: `logps` (B, T) are the log-probabilities of the completion
tokens under the policy (zero where `mask` is 0), `mask` (B, T) is 1 on completion
tokens, and any per-rollout column (reward, advantage, reference log-probs) comes in
as a (B,) tensor. The trainer dispatches on `LOSSES[method]`, as TRL dispatches on
`loss_type`.

Normalisation: the NLL-style losses (sft, rft, dft, rift, rift_paper, grpo,
grpo_paper) are a token mean over the batch, `sum(per_token_loss) / n_tokens`, like
TRL's SFTTrainer (`loss_type="nll"` / `"dft"`); with gradient accumulation the trainer
rescales them to the tokens of the whole accumulated batch, as TRL does through
`num_items_in_batch` (helpers.trainer.TOKEN_MEAN), so our SFT and DFT match TRL to float
precision. The per-sequence sums the study writes (`sum_i l_i`) differ from this only
by a constant factor per batch. DPO is a mean over pairs (over micro-batches, like TRL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Metrics = dict[str, float]


class LossInputError(ValueError):
    """A loss received tensors of the wrong shape or a missing per-rollout column."""


def _check(logps: Tensor, mask: Tensor, **columns: Tensor) -> Tensor:
    """Validate shapes; return the mask as a float tensor."""
    if logps.dim() != 2 or logps.shape != mask.shape:
        raise LossInputError(
            f"logps and mask must both be (B, T); got {tuple(logps.shape)} and {tuple(mask.shape)}"
        )
    for name, col in columns.items():
        if col is None:
            raise LossInputError(f"this loss needs the per-rollout column `{name}`")
        if col.shape != (logps.shape[0],):
            raise LossInputError(f"`{name}` must be ({logps.shape[0]},), got {tuple(col.shape)}")
    return mask.to(logps.dtype)


def _token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Sum over masked tokens divided by their count (clamped, so an empty batch gives a finite zero)."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def _nll_metrics(logps: Tensor, mask: Tensor) -> Metrics:
    """Token-mean NLL and token count, the metrics every NLL-style loss reports."""
    with torch.no_grad():
        return {"nll": _token_mean(-logps, mask).item(), "tokens": mask.sum().item()}


def sft(logps: Tensor, mask: Tensor) -> tuple[Tensor, Metrics]:
    """SFT: token-mean NLL over all rollouts."""
    m = _check(logps, mask)
    return _token_mean(-logps, m), _nll_metrics(logps, m)


def rft(logps: Tensor, mask: Tensor, reward: Tensor) -> tuple[Tensor, Metrics]:
    """RFT: token-mean NLL over the correct rollouts only (reward > 0)."""
    m = _check(logps, mask, reward=reward)
    kept = m * (reward > 0).to(m.dtype)[:, None]
    metrics = _nll_metrics(logps, kept)
    metrics["kept_fraction"] = (reward > 0).float().mean().item()
    return _token_mean(-logps, kept), metrics


def dft(logps: Tensor, mask: Tensor) -> tuple[Tensor, Metrics]:
    """DFT (Wu et al. 2025): token NLL weighted by the stop-gradient token probability.

    Same as TRL's SFTTrainer `loss_type="dft"`: `-log p_t * sg(p_t)`, token mean.
    The weight is detached, so the gradient is `-sg(p_t) * grad log p_t`.
    """
    m = _check(logps, mask)
    weight = logps.detach().exp()
    loss = _token_mean(-logps * weight, m)
    metrics = _nll_metrics(logps, m)
    metrics["mean_token_prob"] = _token_mean(weight, m).item()
    return loss, metrics


def rift(logps: Tensor, mask: Tensor, reward: Tensor) -> tuple[Tensor, Metrics]:
    """RIFT as published (Liu et al. 2026, arXiv 2601.09253): `-r log p` if r > 0, `-r p` if r < 0.

    `reward` is the signed reward (+1 correct / -0.2 wrong by default, mapped by
    helpers.method_data from profile.train.rift_pos_reward / rift_neg_reward).
    p is the per-token probability p(y_t | x, y_<t), and both branches are token
    means: the sequence probability of a long chain of thought underflows to 0, so a
    sequence-level linear term would carry no gradient at all. Per token, the
    negative branch lies in [0, |r|] and its gradient `-r p_t grad log p_t` is
    bounded by |r| (it vanishes as p_t -> 0 instead of exploding like `-r log p`).
    """
    m = _check(logps, mask, reward=reward)
    r = reward.to(logps.dtype)[:, None]
    positive = (reward > 0)[:, None]
    per_token = torch.where(positive, -r * logps, -r * logps.exp())
    metrics = _nll_metrics(logps, m)
    with torch.no_grad():
        neg = m * (~positive).to(m.dtype)
        metrics["neg_fraction"] = (reward < 0).float().mean().item()
        metrics["neg_mean_token_prob"] = _token_mean(logps.exp(), neg).item()
    return _token_mean(per_token, m), metrics


def rift_paper(logps: Tensor, mask: Tensor, reward: Tensor, lam: float) -> tuple[Tensor, Metrics]:
    """RIFT as the study writes it: `(1 - r * lambda) * NLL` with binary r (profile.train.rift_lambda)."""
    m = _check(logps, mask, reward=reward)
    weight = (1.0 - reward.to(logps.dtype) * lam)[:, None]
    metrics = _nll_metrics(logps, m)
    metrics["mean_weight"] = weight.mean().item()
    return _token_mean(-logps * weight, m), metrics


def grpo_paper(logps: Tensor, mask: Tensor, advantage: Tensor) -> tuple[Tensor, Metrics]:
    """Offline GRPO as the study writes it: `A * NLL` with `A = r - mean_group + 0.1` (no std, no KL).

    The advantage is computed from the stored groups by helpers.method_data.
    """
    m = _check(logps, mask, advantage=advantage)
    a = advantage.to(logps.dtype)[:, None]
    metrics = _nll_metrics(logps, m)
    metrics["mean_advantage"] = advantage.float().mean().item()
    return _token_mean(-logps * a, m), metrics


def grpo(logps: Tensor, mask: Tensor, advantage: Tensor) -> tuple[Tensor, Metrics]:
    """Offline GRPO as KRAFTON AI's Offline-GRPO recipe does it (as documented by NeMo RL).

    Per token `-A * p_t` with `p_t = exp(log p_t)`: the policy ratio
    `pi_theta / pi_behaviour` with the unknown teacher probability taken as 1, no
    clipping, no KL (NeMo RL's optional KL term is off here, as in the study).
    Advantages `A = r - mean_group` without std normalisation; all-correct groups get
    A = +bias (0.1) so fully solved prompts are still learned; all-wrong groups get
    A = 0 and contribute nothing. helpers.method_data computes A from the stored groups.
    """
    m = _check(logps, mask, advantage=advantage)
    a = advantage.to(logps.dtype)[:, None]
    metrics = _nll_metrics(logps, m)
    metrics["mean_advantage"] = advantage.float().mean().item()
    return _token_mean(-a * logps.exp(), m), metrics


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, Metrics]:
    """Sigmoid DPO on sequence-summed log-probs: `-log sigmoid(beta * (chosen ratio - rejected ratio))`."""
    shapes = {
        t.shape for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    }
    if len(shapes) != 1 or policy_chosen_logps.dim() != 1:
        raise LossInputError(
            f"dpo_loss needs four (B,) tensors of equal shape; got shapes {sorted(map(tuple, shapes))}"
        )
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    margin = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margin).mean()
    return loss, _pair_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)


def dpo(
    logps: Tensor, mask: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float
) -> tuple[Tensor, Metrics]:
    """DPO on a batch laid out as [chosen rows; rejected rows] (as TRL's collator does)."""
    m = _check(logps, mask)
    if logps.shape[0] % 2 or ref_chosen_logps.shape != (logps.shape[0] // 2,):
        raise LossInputError(
            f"dpo expects 2P rows (P chosen then P rejected) and (P,) reference log-probs; got {logps.shape[0]} rows "
            f"and reference shape {tuple(ref_chosen_logps.shape)}"
        )
    chosen, rejected = (logps * m).sum(dim=1).chunk(2)
    return dpo_loss(
        chosen, rejected, ref_chosen_logps.to(logps.dtype), ref_rejected_logps.to(logps.dtype), beta
    )


LOSSES: dict[str, Callable[..., tuple[Tensor, Metrics]]] = {
    "sft": sft,
    "rft": rft,
    "dft": dft,
    "rift": rift,
    "rift_paper": rift_paper,
    "grpo": grpo,
    "grpo_paper": grpo_paper,
    "dpo": dpo,
}

# The per-rollout columns each loss reads from the batch (the collator carries them).
LOSS_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": (),
    "rft": ("reward",),
    "dft": (),
    "rift": ("reward",),
    "rift_paper": ("reward",),
    "grpo": ("advantage",),
    "grpo_paper": ("advantage",),
    "dpo": ("ref_chosen_logps", "ref_rejected_logps"),
}


def loss_hparams(method: str, train: Any) -> dict[str, float]:
    """Scalar hyper-parameters a loss takes from profile.train (lambda for rift_paper, beta for DPO)."""
    if method == "rift_paper":
        return {"lam": float(train.rift_lambda)}
    if method == "dpo":
        return {"beta": float(train.beta)}
    if method in _CONTRASTIVE_DEFAULTS:
        return contrastive_hparams(method, train)
    return {}


# The contrastive family (chapter 08), each as TRL 1.x computes it. Paired losses read DPO's
# batch [P chosen rows; P rejected rows]; KTO reads [B rollouts; B mismatched rows], the second
# block only feeding its KL baseline. Hyper-parameter defaults, used until a profile carries
# the field `train.<method>_<name>` (train.ipo_beta, train.simpo_gamma; see contrastive_hparams):
IPO_BETA = 0.1  # TRL DPOConfig.beta default; IPO's tau (Azar et al. 2023, arXiv 2310.12036)
DPO_NORM_BETA = 0.1  # TRL DPOConfig.beta default, as used by loss_type="sigmoid_norm"
SIMPO_BETA = 2.0  # SimPO's reference code default (princeton-nlp/SimPO SimPOConfig.beta; arXiv 2405.14734)
SIMPO_GAMMA = 0.5  # there gamma = gamma_beta_ratio 0.25 * beta 2.0; also TRL CPOConfig.simpo_gamma
KTO_BETA = 0.1  # TRL KTOConfig.beta default (Ethayarajh et al. 2024, arXiv 2402.01306)
KTO_DESIRABLE_WEIGHT = 1.0  # TRL KTOConfig.desirable_weight default
KTO_UNDESIRABLE_WEIGHT = 1.0  # TRL KTOConfig.undesirable_weight default


def _blocks(logps: Tensor, mask: Tensor, **columns: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sequence sums and completion lengths of the two row blocks; every column must be (rows / 2,)."""
    m = _check(logps, mask)
    half = logps.shape[0] // 2
    if logps.shape[0] % 2:
        raise LossInputError(f"expected 2P rows (two blocks of P); got {logps.shape[0]} rows")
    for name, col in columns.items():
        if col is None or col.shape != (half,):
            got = "nothing" if col is None else tuple(col.shape)
            raise LossInputError(f"`{name}` must be ({half},) for {2 * half} rows, got {got}")
    sums, lengths = (logps * m).sum(dim=1), m.sum(dim=1).clamp(min=1)
    return *sums.chunk(2), *lengths.chunk(2)


def _pair_metrics(chosen: Tensor, rejected: Tensor, chosen_logps: Tensor, rejected_logps: Tensor) -> Metrics:
    """The implicit rewards of chosen and rejected, their margin and how often it is positive (as dpo_loss)."""
    with torch.no_grad():
        margin = chosen - rejected
        return {
            "rewards_chosen": chosen.mean().item(),
            "rewards_rejected": rejected.mean().item(),
            "rewards_margin": margin.mean().item(),
            "rewards_accuracy": (margin > 0).float().mean().item(),
            "logps_chosen": chosen_logps.mean().item(),
            "logps_rejected": rejected_logps.mean().item(),
        }


def ipo(
    logps: Tensor, mask: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float
) -> tuple[Tensor, Metrics]:
    """IPO as TRL's DPOTrainer loss_type="ipo": `(h - 1 / (2 beta))^2`, mean over pairs.

    h is the margin of the log-ratios to the reference, each divided by its completion
    length (TRL's reading of the paper, confirmed with its authors).
    """
    c, r, n_c, n_r = _blocks(
        logps, mask, ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps
    )
    chosen, rejected = (c - ref_chosen_logps) / n_c, (r - ref_rejected_logps) / n_r
    loss = ((chosen - rejected - 1 / (2 * beta)) ** 2).mean()
    return loss, _pair_metrics(beta * chosen, beta * rejected, c, r)


def dpo_norm(
    logps: Tensor, mask: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, beta: float
) -> tuple[Tensor, Metrics]:
    """Length-normalised DPO, TRL's loss_type="sigmoid_norm": DPO on log-ratios divided by completion length."""
    c, r, n_c, n_r = _blocks(
        logps, mask, ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps
    )
    chosen, rejected = beta * (c - ref_chosen_logps) / n_c, beta * (r - ref_rejected_logps) / n_r
    return -F.logsigmoid(chosen - rejected).mean(), _pair_metrics(chosen, rejected, c, r)


def simpo(logps: Tensor, mask: Tensor, beta: float, gamma: float) -> tuple[Tensor, Metrics]:
    """SimPO (reference-free), TRL's CPOTrainer loss_type="simpo", cpo_alpha=0.

    `-log sigmoid(beta * (mean logp chosen - mean logp rejected) - gamma)`, mean over pairs;
    the mean is over each completion's tokens.
    """
    c, r, n_c, n_r = _blocks(logps, mask)
    chosen, rejected = beta * c / n_c, beta * r / n_r
    return -F.logsigmoid(chosen - rejected - gamma).mean(), _pair_metrics(chosen, rejected, c, r)


def kto(
    logps: Tensor,
    mask: Tensor,
    reward: Tensor,
    ref_logps: Tensor,
    ref_kl_logps: Tensor,
    beta: float,
    desirable_weight: float = KTO_DESIRABLE_WEIGHT,
    undesirable_weight: float = KTO_UNDESIRABLE_WEIGHT,
) -> tuple[Tensor, Metrics]:
    """KTO as TRL's KTOTrainer loss_type="kto", on rows [B rollouts; B mismatched (prompt, completion) rows].

    A rollout with reward > 0 is desirable: `1 - sigmoid(beta (ratio - z))`; otherwise
    `1 - sigmoid(beta (z - ratio))`; weighted, mean over the B rollouts. `ratio` is the
    sequence log-ratio to the reference; z, TRL's estimate of KL(policy || reference), is
    the mean log-ratio of the mismatched rows, clamped at 0 and without gradient.
    """
    s, s_kl, _, _ = _blocks(logps, mask, reward=reward, ref_logps=ref_logps, ref_kl_logps=ref_kl_logps)
    z = (s_kl.detach() - ref_kl_logps).mean().clamp(min=0)
    ratio = s - ref_logps
    desirable = reward > 0
    per_row = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - z))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z - ratio))),
    )
    with torch.no_grad():  # the same keys every step, so logs average across steps and processes
        metrics = {
            "kl": z.item(),
            "desirable_fraction": desirable.float().mean().item(),
            "rewards_signed": (beta * torch.where(desirable, ratio, -ratio)).mean().item(),
        }
    return per_row.mean(), metrics


LOSSES.update({"ipo": ipo, "dpo_norm": dpo_norm, "simpo": simpo, "kto": kto})
_REF = ("ref_chosen_logps", "ref_rejected_logps")
LOSS_COLUMNS.update(
    {"ipo": _REF, "dpo_norm": _REF, "simpo": (), "kto": ("reward", "ref_logps", "ref_kl_logps")}
)
# Methods whose batch is two blocks of rows, by the dataset's text column of each block
# (the collator lays out [all first; all second], as TRL's DPO collator does).
BLOCKS: dict[str, tuple[str, str]] = {
    **{m: ("chosen", "rejected") for m in ("dpo", "ipo", "dpo_norm", "simpo")},
    "kto": ("completion", "kl_completion"),
}
# Methods that read the reference (adapter-off) sequence log-probs of both blocks, and their columns.
REFERENCE_COLUMNS: dict[str, tuple[str, str]] = {
    **{m: _REF for m in ("dpo", "ipo", "dpo_norm")},
    "kto": ("ref_logps", "ref_kl_logps"),
}
_CONTRASTIVE_DEFAULTS = {
    "ipo": {"beta": IPO_BETA},
    "dpo_norm": {"beta": DPO_NORM_BETA},
    "simpo": {"beta": SIMPO_BETA, "gamma": SIMPO_GAMMA},
    "kto": {
        "beta": KTO_BETA,
        "desirable_weight": KTO_DESIRABLE_WEIGHT,
        "undesirable_weight": KTO_UNDESIRABLE_WEIGHT,
    },
}


def contrastive_hparams(method: str, train: Any) -> dict[str, float]:
    """A contrastive loss's hyper-parameters: profile field `train.<method>_<name>` if it exists, else the default."""
    return {k: float(getattr(train, f"{method}_{k}", v)) for k, v in _CONTRASTIVE_DEFAULTS[method].items()}
