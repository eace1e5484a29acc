"""Every loss against values computed by hand on fixed log-probs, rewards and values."""
from __future__ import annotations

import math

import pytest
import torch

from temper.align import losses as L


def t(*x):
    return torch.tensor(x, dtype=torch.float64)


def softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def test_sft_loss_counts_only_masked_tokens():
    logps = t([-1.0, -2.0, -3.0])
    mask = torch.tensor([[True, False, True]])
    assert L.sft_loss(logps, mask).item() == pytest.approx(2.0)
    assert L.sft_loss(logps, mask, normalizer=4).item() == pytest.approx(1.0)  # a step's token count


def test_bradley_terry_with_and_without_margin():
    assert L.bradley_terry_loss(t(2.0), t(1.0)).item() == pytest.approx(softplus(-1.0))
    assert L.bradley_terry_loss(t(2.0), t(1.0), margin=0.5).item() == pytest.approx(softplus(-0.5))


PREF = L.PreferenceLogps(policy_chosen=t(-10.0), policy_rejected=t(-12.0), ref_chosen=t(-11.0),
                         ref_rejected=t(-11.0), len_chosen=t(2.0), len_rejected=t(4.0))
# h = (-10 + 11) - (-12 + 11) = 2; per-token h = 1/2 - (-1)/4 = 0.75


@pytest.mark.parametrize("name, expected", [
    ("sigmoid", softplus(-0.1 * 2)),
    ("ipo", (0.75 - 1 / (2 * 0.1)) ** 2),
    ("hinge", 1 - 0.1 * 2),
    ("length_normalized", softplus(-0.1 * 0.75)),
])
def test_dpo_variants(name, expected):
    assert L.DPO_LOSSES[name](PREF, 0.1).item() == pytest.approx(expected)


def test_dpo_label_smoothing_and_rewards():
    got = L.dpo_sigmoid(PREF, 0.1, label_smoothing=0.1).item()
    assert got == pytest.approx(0.9 * softplus(-0.2) + 0.1 * softplus(0.2))
    chosen, rejected = L.dpo_rewards(PREF, 0.1)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.1, -0.1))


def test_gae_by_hand():
    adv, ret = L.gae(t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7]), torch.ones(1, 3), gamma=1.0, lam=0.9)
    # delta = (0.1, 0.1, 0.3); A2 = 0.3, A1 = 0.1 + 0.9 * 0.3, A0 = 0.1 + 0.9 * A1
    assert adv[0].tolist() == pytest.approx([0.433, 0.37, 0.3])
    assert ret[0].tolist() == pytest.approx([0.933, 0.97, 1.0])


def test_gae_stops_at_padding():
    adv, _ = L.gae(t([0.0, 1.0, 5.0]), t([0.5, 0.6, 9.0]), torch.tensor([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.9)
    assert adv[0].tolist() == pytest.approx([0.1 + 0.9 * 0.4, 0.4, 0.0])


def test_ppo_clipped_objective():
    logps = torch.log(t([1.5, 0.5]))
    loss, stats = L.ppo_policy_loss(logps, torch.zeros(1, 2, dtype=torch.float64), t([1.0, -1.0]),
                                    torch.ones(1, 2), clip=0.2)
    # A=+1, ratio 1.5: max(-1.5, -1.2) = -1.2; A=-1, ratio 0.5: max(0.5, 0.8) = 0.8
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert stats["clipfrac"] == pytest.approx(1.0)


def test_value_loss_clipped():
    loss, _ = L.value_loss(t([1.0]), t([0.5]), t([0.0]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * max(1.0**2, 0.7**2))
    loss, _ = L.value_loss(t([0.6]), t([0.5]), t([0.0]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.36)


def test_kl_estimators_and_shaped_rewards():
    lp, ref = t([-1.0, -2.0]), t([-1.1, -1.5])
    assert L.kl_penalty(lp, ref, "k1")[0].tolist() == pytest.approx([0.1, -0.5])
    d = [-0.1, 0.5]
    assert L.kl_penalty(lp, ref, "k3")[0].tolist() == pytest.approx([math.exp(x) - x - 1 for x in d])
    rewards, _ = L.shaped_rewards(t(2.0), lp, ref, torch.ones(1, 2), kl_coef=0.1)
    assert rewards[0].tolist() == pytest.approx([-0.01, 0.05 + 2.0])


def test_grpo_advantages():
    adv = L.grpo_advantages(t(1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0), group_size=4)
    s = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    assert adv.tolist() == pytest.approx([0.5 / (s + 1e-4), -0.5 / (s + 1e-4)] * 1 + [-0.5 / (s + 1e-4)] +
                                         [0.5 / (s + 1e-4)] + [0.0] * 4)
    assert L.grpo_advantages(t(1.0, 0.0), 2, scale=False).tolist() == [0.5, -0.5]
    with pytest.raises(ValueError):
        L.grpo_advantages(t(1.0, 0.0, 1.0), 2)


def test_grpo_loss_sequence_and_token_aggregation():
    logps = t([-1.0, -1.0, 0.0], [-2.0, 0.0, 0.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = t(1.0, -2.0)
    loss, _ = L.grpo_loss(logps, logps, None, adv, mask, beta=0.0)  # ratio 1: per token -A
    assert loss.item() == pytest.approx((-1.0 + 2.0) / 2)
    loss, _ = L.grpo_loss(logps, logps, None, adv, mask, beta=0.0, aggregation="token")
    assert loss.item() == pytest.approx((-1.0 - 1.0 + 2.0) / 3)
    loss, stats = L.grpo_loss(logps, logps, logps - 0.1, adv, mask, beta=0.5)
    k3 = math.exp(-0.1) + 0.1 - 1
    assert loss.item() == pytest.approx((-1.0 + 2.0) / 2 + 0.5 * k3)
    assert stats["kl"] == pytest.approx(k3)
    loss, _ = L.grpo_loss(logps, logps, None, adv, mask, beta=0.0, normalizer=4.0)
    assert loss.item() == pytest.approx((-1.0 + 2.0) / 4)


def test_adaptive_kl_controller():
    ctl = L.AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(12.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 100 / 10000))  # error clipped to 0.2
    fixed = L.AdaptiveKLController(0.1, target=None)
    assert fixed.update(50.0, 100) == 0.1


def test_cosine_schedule():
    assert L.cosine_schedule(0, 10, 2) == pytest.approx(0.5)
    assert L.cosine_schedule(2, 10, 2) == pytest.approx(1.0)
    assert L.cosine_schedule(6, 10, 2, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert L.cosine_schedule(10, 10, 2, 0.1) == pytest.approx(0.1)
