"""Tests of the GRPO math: advantages, KL estimators, the loss against the released formula, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from learner.grpo import group_advantages, kl_penalty, policy_loss


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 2.0, 2.0], dtype=torch.float64)
    std_1 = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)  # unbiased
    std_2 = math.sqrt(4 * 1.0**2 / 3)
    expected = [-1.5 / (std_1 + 1e-4), -0.5 / (std_1 + 1e-4), 0.5 / (std_1 + 1e-4), 1.5 / (std_1 + 1e-4)]
    expected += [-1 / (std_2 + 1e-4)] * 2 + [1 / (std_2 + 1e-4)] * 2
    assert group_advantages(rewards, 4).tolist() == pytest.approx(expected, rel=1e-12)
    assert group_advantages(rewards, 4, scale="none").tolist() == [-1.5, -0.5, 0.5, 1.5, -1, -1, 1, 1]
    pair = 0.5 / (math.sqrt(0.5) + 0.5)  # groups of two: [1, 2], [3, 4], then two constant groups
    assert group_advantages(rewards, 2, eps=0.5).tolist() == pytest.approx(
        [-pair, pair, -pair, pair, 0, 0, 0, 0]
    )


def test_equal_rewards_give_exactly_zero_never_nan():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 1.3, 1.3, 1.3])  # means of these are inexact
    for scale in ("std", "none"):
        advantages = group_advantages(rewards, 3, scale=scale)
        assert torch.equal(advantages, torch.zeros(9))
    assert torch.equal(group_advantages(torch.tensor([0.3, 1.0]), 1), torch.zeros(2))  # G = 1: no comparison


def test_group_advantages_rejects_bad_shapes_and_scales():
    with pytest.raises(ValueError, match="group_size=4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 4, scale="rank")


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -2.0])
    assert kl_penalty(logp, ref, "k1").tolist() == [1.0, 0.0]
    assert kl_penalty(logp, ref, "k2").tolist() == [0.5, 0.0]
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx([math.exp(-1) + 1 - 1, 0.0])
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(logp, ref, "k4")


def batch(seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 5, generator=generator, dtype=dtype) * 3
    old_logp = logp + (torch.rand(3, 5, generator=generator, dtype=dtype) - 0.5) * 0.8
    ref_logp = logp + (torch.rand(3, 5, generator=generator, dtype=dtype) - 0.5)
    advantages = torch.tensor([1.2, -0.7, 0.3], dtype=dtype)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=dtype)
    return logp, old_logp, ref_logp, advantages, mask


def released_objective(logp, ref_logp, advantages, mask, beta=0.04):
    """The released Seg-R1 loss, written out: ratio exp(logp - logp.detach()), k3 KL, mean of token means."""
    ratio = torch.exp(logp - logp.detach())
    kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    per_token = -(ratio * advantages[:, None] - beta * kl)
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def test_unclipped_loss_is_exactly_the_released_objective_in_value_and_gradient():
    logp, _, ref_logp, advantages, mask = batch()
    ours_logp = logp.clone().requires_grad_()
    theirs_logp = logp.clone().requires_grad_()
    loss, stats = policy_loss(ours_logp, ours_logp.detach(), ref_logp, advantages, mask, clip_low=None)
    expected = released_objective(theirs_logp, ref_logp, advantages, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    loss.backward()
    expected.backward()
    assert torch.allclose(ours_logp.grad, theirs_logp.grad, rtol=1e-12, atol=0)
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_frac"] == 0.0 and stats["tokens"] == 10.0


def test_clipping_takes_the_pessimistic_branch():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]]))  # ratios against old_logp = 0
    old_logp = torch.zeros(1, 4)
    mask = torch.ones(1, 4)
    loss_pos, stats = policy_loss(logp, old_logp, None, torch.tensor([1.0]), mask, beta=0.0, agg="token-mean")
    assert loss_pos.item() == pytest.approx(-(1.2 + 0.5 + 1.1 + 0.5) / 4)  # A > 0: only r > 1.2 is capped
    assert stats["clip_frac"] == 0.25
    loss_neg, stats = policy_loss(
        logp, old_logp, None, torch.tensor([-1.0]), mask, beta=0.0, agg="token-mean"
    )
    assert loss_neg.item() == pytest.approx((1.5 + 0.8 + 1.1 + 0.8) / 4)  # A < 0: only r < 0.8 is capped
    assert stats["clip_frac"] == 0.5
    loss_high, _ = policy_loss(
        logp, old_logp, None, torch.tensor([1.0]), mask, beta=0.0, clip_high=0.28, agg="token-mean"
    )
    assert loss_high.item() == pytest.approx(-(1.28 + 0.5 + 1.1 + 0.5) / 4)  # clip-higher


def test_aggregations_hand_computed():
    per_token_value = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    logp = torch.log(per_token_value.clamp(min=1e-3))  # ratio = value against old_logp = 0, A = -1
    args = (logp, torch.zeros(2, 4), None, torch.tensor([-1.0, -1.0]), mask)

    def loss(agg, **kw):
        return policy_loss(*args, clip_low=None, beta=0.0, agg=agg, **kw)[0].item()

    assert loss("seq-mean-token-mean") == pytest.approx(((1 + 2 + 3) / 3 + 4 / 1) / 2)
    assert loss("token-mean") == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert loss("seq-mean-token-sum-norm") == pytest.approx((6 / 4 + 4 / 4) / 2)
    assert loss("seq-mean-token-sum-norm", max_len=10) == pytest.approx((6 / 10 + 4 / 10) / 2)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("clip_low, kl", [(None, "k3"), (0.2, "k1"), (0.2, "k2")])
def test_gradcheck(agg, clip_low, kl):
    logp, old_logp, ref_logp, advantages, mask = batch(seed=1)

    def objective(policy_logp):
        return policy_loss(
            policy_logp, old_logp, ref_logp, advantages, mask, clip_low=clip_low, kl=kl, agg=agg
        )[0]

    assert torch.autograd.gradcheck(objective, (logp.clone().requires_grad_(),))


def test_inputs_are_not_modified_and_stats_are_floats():
    tensors = batch(seed=2, dtype=torch.float32)
    copies = [t.clone() for t in tensors]
    loss, stats = policy_loss(*tensors, clip_low=0.1)
    assert all(torch.equal(a, b) for a, b in zip(tensors, copies)) and loss.isfinite()
    assert set(stats) == {"kl", "clip_frac", "ratio_mean", "adv_mean", "tokens"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    logp, _, ref_logp, advantages, mask = tensors
    kl = kl_penalty(logp, ref_logp)
    assert stats["kl"] == pytest.approx(((kl * mask).sum() / mask.sum()).item(), rel=1e-6)
    assert stats["adv_mean"] == pytest.approx(advantages.mean().item())


def test_kl_is_reported_without_entering_the_loss_when_beta_is_zero():
    logp, old_logp, ref_logp, advantages, mask = batch(seed=3)
    with_ref, stats = policy_loss(logp, old_logp, ref_logp, advantages, mask, beta=0.0)
    without_ref, stats_without = policy_loss(logp, old_logp, None, advantages, mask, beta=0.0)
    assert with_ref.item() == without_ref.item()
    assert stats["kl"] > 0 and stats_without["kl"] == 0.0


def test_bad_arguments_name_the_problem():
    logp, old_logp, ref_logp, advantages, mask = batch()
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old_logp, None, advantages, mask)
    with pytest.raises(ValueError, match="agg"):
        policy_loss(logp, old_logp, ref_logp, advantages, mask, agg="sum")
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old_logp, ref_logp, advantages[:2], mask)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, old_logp, ref_logp, advantages, mask[:, :3])
