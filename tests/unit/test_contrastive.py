"""The contrastive family (IPO, length-normalised DPO, SimPO, KTO): by hand, against TRL's trainers, trained.

Parity tests drive TRL's own trainer (DPOTrainer loss_type ipo / sigmoid_norm, CPOTrainer
loss_type simpo with cpo_alpha 0, KTOTrainer) on a tiny model and one batch, then feed the
same tokens through our token log-probs and loss: the losses and their gradients with
respect to every model weight must agree.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from helpers import losses
from helpers.logps import token_logps
from helpers.method_data import MethodDataError, build_method_dataset, kto_rows
from helpers.profiles import CONTRASTIVE, TrainConfig, load_profile
from tests.builders import make_model, make_rollouts, make_tokenizer, save_base

trl = pytest.importorskip("trl")

COMMON = dict(
    bf16=False, activation_checkpointing=False, report_to=[], use_cpu=True, per_device_train_batch_size=4
)
L = math.log


# ---- by hand -------------------------------------------------------------------------------


def pair_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [chosen 1, chosen 2, rejected 1, rejected 2]; completion lengths 2, 1, 1, 3."""
    logps = torch.tensor(
        [
            [L(0.5), L(0.25), 0.0],
            [L(0.8), 0.0, 0.0],
            [L(0.1), 0.0, 0.0],
            [L(0.5), L(0.5), L(0.5)],
        ],
        requires_grad=True,
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]])
    return logps, mask


REF_C, REF_R = torch.tensor([L(0.25), L(0.5)]), torch.tensor([L(0.2), L(0.25)])
# log-ratios to the reference per completion token: chosen (L(1/8) - L(1/4)) / 2, L(.8) - L(.5);
# rejected L(.1) - L(.2), (L(1/8) - L(1/4)) / 3
CHOSEN = torch.tensor([L(0.5) / 2, L(1.6)])
REJECTED = torch.tensor([L(0.5), L(0.5) / 3])


def test_ipo_by_hand() -> None:
    logps, mask = pair_batch()
    loss, _ = losses.ipo(logps, mask, REF_C, REF_R, beta=0.25)
    expected = ((CHOSEN - REJECTED - 1 / (2 * 0.25)) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_dpo_norm_by_hand() -> None:
    logps, mask = pair_batch()
    loss, metrics = losses.dpo_norm(logps, mask, REF_C, REF_R, beta=0.5)
    margin = 0.5 * (CHOSEN - REJECTED)
    expected = torch.log1p(torch.exp(-margin)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["rewards_accuracy"] == (margin > 0).float().mean().item()


def test_simpo_by_hand() -> None:
    logps, mask = pair_batch()
    loss, _ = losses.simpo(logps, mask, beta=2.0, gamma=0.3)
    mean_c = torch.tensor([L(0.125) / 2, L(0.8)])
    mean_r = torch.tensor([L(0.1), L(0.5)])
    expected = torch.log1p(torch.exp(-(2.0 * (mean_c - mean_r) - 0.3))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_kto_by_hand_and_its_kl_baseline_has_no_gradient() -> None:
    # rows [rollout 1 (right), rollout 2 (wrong); mismatched 1, mismatched 2]
    logps = torch.tensor(
        [[L(0.5), L(0.5)], [L(0.2), 0.0], [L(0.4), 0.0], [L(0.9), L(0.5)]], requires_grad=True
    )
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]])
    reward, ref, ref_kl = (
        torch.tensor([1.0, 0.0]),
        torch.tensor([L(0.5), L(0.1)]),
        torch.tensor([L(0.2), L(0.3)]),
    )
    loss, metrics = losses.kto(
        logps, mask, reward, ref, ref_kl, beta=0.5, desirable_weight=1.0, undesirable_weight=2.0
    )
    z = (L(0.4) - L(0.2) + L(0.45) - L(0.3)) / 2  # mean mismatched log-ratio, positive so unclamped
    ratio = torch.tensor([L(0.25) - L(0.5), L(0.2) - L(0.1)])
    expected = (1 - torch.sigmoid(0.5 * (ratio[0] - z)) + 2.0 * (1 - torch.sigmoid(0.5 * (z - ratio[1])))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["kl"] == pytest.approx(z, rel=1e-6)
    loss.backward()
    assert torch.all(logps.grad[2:] == 0) and torch.all(logps.grad[:2][mask[:2] == 1] != 0)
    # a negative KL estimate is clamped to zero, as in TRL
    _, metrics = losses.kto(logps, mask, reward, ref, ref_kl + 5.0, beta=0.5)
    assert metrics["kl"] == 0.0


def test_shapes_are_checked() -> None:
    logps, mask = pair_batch()
    with pytest.raises(losses.LossInputError, match="2P rows"):
        losses.simpo(logps[:3], mask[:3], beta=2.0, gamma=0.5)
    with pytest.raises(losses.LossInputError, match="`ref_chosen_logps` must be \\(2,\\)"):
        losses.ipo(logps, mask, REF_C[:1], REF_R, beta=0.1)
    with pytest.raises(losses.LossInputError, match="`reward` must be"):
        losses.kto(logps, mask, None, REF_C, REF_R, beta=0.1)


# ---- against TRL ---------------------------------------------------------------------------


def moved(model: torch.nn.Module) -> torch.nn.Module:
    """Nudge every weight so the policy differs from its reference copy (no trivial log 2 / 0.5 losses)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def pairs() -> list[dict]:
    rows = make_rollouts(4, 2)
    return [
        {
            "prompt": rows[i]["prompt"],
            "chosen": rows[i]["completion"],
            "rejected": rows[i + 1]["completion"] + " 9 9",
        }
        for i in range(0, len(rows), 2)
    ]


def assert_same_loss_and_grads(ours: torch.Tensor, theirs: torch.Tensor, model: torch.nn.Module) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours, params, allow_unused=True)
    g_theirs = torch.autograd.grad(theirs, params, allow_unused=True)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-7)
    flat_ours = torch.cat([g.flatten() for g in g_ours if g is not None])
    flat_theirs = torch.cat([g.flatten() for g in g_theirs if g is not None])
    assert flat_theirs.norm() > 0
    # float32 forward passes that differ only in how the LM head is evaluated
    torch.testing.assert_close(flat_ours, flat_theirs, rtol=1e-4, atol=1e-5 * flat_theirs.abs().max().item())


@pytest.mark.parametrize(
    ("method", "loss_type", "beta"), [("ipo", "ipo", 0.1), ("dpo_norm", "sigmoid_norm", 2.0)]
)
def test_paired_losses_match_trl_dpo_trainer(tmp_path, method: str, loss_type: str, beta: float) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=1)
    ref_model = moved(copy.deepcopy(model))
    args = trl.DPOConfig(output_dir=str(tmp_path), loss_type=loss_type, beta=beta, max_length=64, **COMMON)
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(pairs()),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, dict(batch))

    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad():
        ref_chosen, ref_rejected = (
            (token_logps(trainer.ref_model, ids, attn, comp) * comp[:, 1:]).sum(1).chunk(2)
        )
    logps = token_logps(trainer.model, ids, attn, comp)
    ours, _ = losses.LOSSES[method](logps, comp[:, 1:], ref_chosen, ref_rejected, beta=beta)
    assert len(set(comp.sum(1).tolist())) > 1  # lengths differ, so a missing normalisation shows
    assert_same_loss_and_grads(ours, theirs, trainer.model)


def test_simpo_matches_trl_cpo_trainer(tmp_path) -> None:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tokenizer = make_tokenizer()
    model = moved(make_model(len(tokenizer), seed=2))
    args = CPOConfig(
        output_dir=str(tmp_path),
        loss_type="simpo",
        cpo_alpha=0.0,
        beta=2.0,
        simpo_gamma=0.7,
        max_length=64,
        remove_unused_columns=False,
        **COMMON,
    )
    trainer = CPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(pairs()), processing_class=tokenizer
    )
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, batch)

    joined = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=trainer.pad_token_id)
    ids, attn = joined["concatenated_input_ids"], joined["concatenated_attention_mask"]
    comp = (joined["concatenated_labels"] != -100).long()
    logps = token_logps(trainer.model, ids, attn, comp)
    ours, _ = losses.simpo(logps, comp[:, 1:], beta=2.0, gamma=0.7)
    assert_same_loss_and_grads(ours, theirs, trainer.model)


def pad_right(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Right-pad (B, T_i) tensors with zeros to one width."""
    width = max(t.shape[1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors]


def test_kto_matches_trl_kto_trainer(tmp_path) -> None:
    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), seed=3)
    ref_model = moved(copy.deepcopy(model))
    rows = make_rollouts(3, 2)  # labels F F T F T T: both kinds in one batch of 6
    data = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["correct"]} for r in rows]
    args = trl.KTOConfig(
        output_dir=str(tmp_path),
        beta=0.3,
        desirable_weight=1.0,
        undesirable_weight=1.5,
        max_length=64,
        **{**COMMON, "per_device_train_batch_size": 6},
    )
    trainer = trl.KTOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    theirs = trainer.compute_loss(trainer.model, dict(batch))

    # our layout: [B rollouts; B mismatched rows], TRL's KL rows as the second block
    ids, kl_ids = pad_right(batch["input_ids"], batch["KL_input_ids"])
    attn, kl_attn = pad_right(batch["attention_mask"], batch["KL_attention_mask"])
    comp, kl_comp = pad_right(batch["completion_mask"], batch["KL_completion_mask"])
    ids, attn, comp = torch.cat([ids, kl_ids]), torch.cat([attn, kl_attn]), torch.cat([comp, kl_comp])
    with torch.no_grad():
        ref = (token_logps(trainer.ref_model, ids, attn, comp) * comp[:, 1:]).sum(1)
    ref_logps, ref_kl_logps = ref.chunk(2)
    logps = token_logps(trainer.model, ids, attn, comp)
    reward = batch["label"].float()
    assert 0 < reward.sum() < len(reward)
    ours, metrics = losses.kto(
        logps,
        comp[:, 1:],
        reward,
        ref_logps,
        ref_kl_logps,
        beta=0.3,
        desirable_weight=1.0,
        undesirable_weight=1.5,
    )
    assert metrics["kl"] > 0  # the baseline is active, so a wrong sign or a missing baseline shows
    assert_same_loss_and_grads(ours, theirs, trainer.model)


# ---- registry, hyper-parameters, data ------------------------------------------------------


def test_registry_and_default_hparams_follow_trl(tmp_path) -> None:
    from trl.experimental.cpo import CPOConfig

    for method in CONTRASTIVE:
        assert method in losses.LOSSES and method in losses.LOSS_COLUMNS
    assert losses.LOSS_COLUMNS["simpo"] == () and "simpo" not in losses.REFERENCE_COLUMNS
    train = TrainConfig()
    dpo_cfg = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    kto_cfg = trl.KTOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    cpo_cfg = CPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    assert losses.loss_hparams("ipo", train) == {"beta": dpo_cfg.beta}
    assert losses.loss_hparams("dpo_norm", train) == {"beta": dpo_cfg.beta}
    assert losses.loss_hparams("kto", train) == {
        "beta": kto_cfg.beta,
        "desirable_weight": kto_cfg.desirable_weight,
        "undesirable_weight": kto_cfg.undesirable_weight,
    }
    # SimPO's beta is its reference code's (2.0), gamma = 0.25 * beta, TRL's simpo_gamma default
    assert losses.loss_hparams("simpo", train) == {"beta": 2.0, "gamma": cpo_cfg.simpo_gamma}
    # a profile field train.<method>_<name> overrides the default
    override = SimpleNamespace(**dataclasses.asdict(train), simpo_gamma=0.9, ipo_beta=0.5)
    assert losses.loss_hparams("simpo", override)["gamma"] == 0.9
    assert losses.loss_hparams("ipo", override) == {"beta": 0.5}


def test_paired_methods_read_dpo_pairs_and_contrastive_names_validate() -> None:
    rollouts = make_rollouts(6, 4)
    dpo = build_method_dataset(rollouts, "dpo", seed=3).to_list()
    for method in ("ipo", "dpo_norm", "simpo"):
        assert build_method_dataset(rollouts, method, seed=3).to_list() == dpo
    profile = load_profile("smoke")
    assert not set(CONTRASTIVE) & set(profile.train.methods)  # never trained by default


def test_kto_rows_pair_each_rollout_with_another_prompts_completion() -> None:
    rollouts = make_rollouts(5, 3)
    rows = build_method_dataset(rollouts, "kto", seed=7).to_list()
    assert len(rows) == len(rollouts)
    assert Counter((r["prompt"], r["completion"], r["reward"]) for r in rows) == Counter(
        (r["prompt"], r["completion"], r["reward"]) for r in rollouts
    )
    owner = {r["completion"]: r["prompt_id"] for r in rollouts}
    assert all(owner[r["kl_completion"]] != r["prompt_id"] for r in rows)
    # the mismatched completions are a permutation of the matched ones
    assert Counter(r["kl_completion"] for r in rows) == Counter(r["completion"] for r in rows)
    assert kto_rows(rollouts, 7) == kto_rows(rollouts, 7) != kto_rows(rollouts, 8)


def test_kto_rows_need_another_prompt_for_every_rollout() -> None:
    rollouts = make_rollouts(3, 2)
    lopsided = rollouts + [dict(rollouts[0], completion=f" extra {i}") for i in range(3)]  # prompt 0: 5 of 9
    with pytest.raises(MethodDataError, match="one prompt holds 5 of 9 rollouts"):
        build_method_dataset(lopsided, "kto")


# ---- trained through the one entry point ---------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_base(tmp_path_factory.mktemp("base") / "model")


@pytest.mark.slow
@pytest.mark.parametrize("method", CONTRASTIVE)
def test_each_contrastive_method_trains(tmp_path, base, method: str) -> None:
    from helpers.train import train_method

    profile = load_profile("smoke")
    profile = dataclasses.replace(
        profile,
        train=dataclasses.replace(
            profile.train, steps=2, result_step=2, save_steps=(), log_every=1, dpo_pairs_per_prompt=16
        ),
    )
    rollouts = make_rollouts(12, 4)  # 23 pairs, 48 rollouts: two full batches of 8
    out = train_method(profile, method, base, rollouts, tmp_path / method, tmp_path / "init")
    meta = json.loads((out / "train_meta.json").read_text())
    log = json.loads((out / "training_log.json").read_text())
    assert meta["method"] == method and meta["steps"] == 2
    assert meta["loss_hparams"] == losses.loss_hparams(method, profile.train)
    assert meta["examples_seen"] == 2 * profile.train.batch_size  # pairs (or rollouts for kto), not rows
    assert all(math.isfinite(e["loss"]) for e in log)
    trained = load_file(out / "adapter_model.safetensors")
    assert any(torch.count_nonzero(v) > 0 for k, v in trained.items() if "lora_B" in k)  # it learned
    if method == "kto":
        assert all("kl" in e for e in log)
    else:
        assert all("rewards_margin" in e for e in log)


def test_two_block_batches_put_the_rollouts_first() -> None:
    from peft import LoraConfig, get_peft_model

    from helpers.trainer import MethodCollator, reference_logps, tokenize_dataset

    tokenizer = make_tokenizer()
    rollouts = make_rollouts(4, 3)
    tokenized = {}
    for method, first, second in (("kto", "completion", "kl_completion"), ("simpo", "chosen", "rejected")):
        ds = build_method_dataset(rollouts, method, seed=1)
        tokenized[method] = tokenize_dataset(ds, tokenizer, method, max_length=64)
        collator = MethodCollator(tokenizer.pad_token_id, blocks=losses.BLOCKS[method])
        batch = collator([tokenized[method][0], tokenized[method][1]])
        texts = [
            tokenizer.decode(ids[m == 1])
            for ids, m in zip(batch["input_ids"], batch["completion_mask"], strict=True)
        ]
        expected = [ds[0][first], ds[1][first], ds[0][second], ds[1][second]]
        assert [t.strip() for t in texts] == [f"{e.strip()}{tokenizer.eos_token}" for e in expected]
    peft_model = get_peft_model(make_model(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"]))
    collator = MethodCollator(tokenizer.pad_token_id, blocks=losses.BLOCKS["kto"])
    ref = reference_logps(peft_model, tokenized["kto"], collator, 4, "cpu", losses.REFERENCE_COLUMNS["kto"])
    assert set(ref) == {"ref_logps", "ref_kl_logps"} and len(ref["ref_logps"]) == len(rollouts)
