"""Tests of the GRPO math: advantages, KL estimators, the loss against the released formula, gradients, and the
engine/learner mismatch correction (TIS weights, engine KL)."""

from __future__ import annotations

import math

import pytest
import torch

from learner.grpo import (
    engine_mismatch_kl,
    group_advantages,
    kl_penalty,
    overlong_penalty,
    policy_loss,
    truncated_is_weights,
)


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


def test_truncated_is_weights_hand_computed():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3]], dtype=torch.float64))
    engine = torch.log(torch.tensor([[0.25, 0.4, 0.3]], dtype=torch.float64))
    # pi_old / pi_engine = 2, 0.5, 1; the cap 1.5 truncates only the first
    assert truncated_is_weights(old, engine, 1.5)[0].tolist() == pytest.approx([1.5, 0.5, 1.0], rel=1e-12)
    assert truncated_is_weights(old, engine, 3.0)[0].tolist() == pytest.approx([2.0, 0.5, 1.0], rel=1e-12)
    huge = truncated_is_weights(torch.tensor([[0.0]]), torch.tensor([[-1e4]]), 2.0)  # exp(1e4) would be inf
    assert huge.item() == pytest.approx(2.0)
    old.requires_grad_()
    assert not truncated_is_weights(old, engine, 2.0).requires_grad
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, engine, 0.0)


def test_engine_kl_is_zero_when_engine_is_the_learner_and_k3_of_a_known_offset():
    logp, _, _, _, mask = batch(seed=4)
    assert engine_mismatch_kl(logp, logp, mask).item() == 0.0
    # engine = learner + delta on every token: k3 = exp(-delta) + delta - 1 per token, so also its mean
    for delta in (0.3, -0.5):
        expected = math.exp(-delta) + delta - 1
        assert engine_mismatch_kl(logp, logp + delta, mask).item() == pytest.approx(expected, rel=1e-12)
    # per-token offsets: the mean over masked tokens only (masked-out offsets are huge and must not count)
    offsets = torch.tensor([[0.1, 0.2, 9.0], [0.4, 9.0, 9.0]], dtype=torch.float64)
    two_rows = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    k3 = [math.exp(-d) + d - 1 for d in (0.1, 0.2, 0.4)]
    assert engine_mismatch_kl(torch.zeros(2, 3, dtype=torch.float64), offsets, two_rows).item() == pytest.approx(
        sum(k3) / 3, rel=1e-12)


def test_tis_turns_engine_samples_into_the_on_policy_gradient():
    """One token, three actions. The learner's policy is p = (0.5, 0.3, 0.2); the engine samples from
    q = (0.25, 0.25, 0.5) (its log-probs = the learner's + log(q/p) per action), represented exactly by the batch
    of four samples a = 0, 1, 2, 2. With A = (1, 0, -1) per action the on-policy gradient of the loss is
    -sum_a p_a A_a grad log p_a; the uncorrected batch gives -sum_a q_a A_a grad log p_a instead."""
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    action_adv = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    actions = torch.tensor([0, 1, 2, 2])

    def gradient(cap: float | None) -> torch.Tensor:
        logits = torch.log(p).requires_grad_()
        logp = torch.log_softmax(logits, dim=0)[actions][:, None]  # [4, 1]
        old = logp.detach()  # the learner's pre-update log-probs (recomputed)
        engine = old + torch.log(q / p)[actions][:, None]  # a known per-token offset
        weights = None if cap is None else truncated_is_weights(old, engine, cap)
        loss, _ = policy_loss(logp, old, None, action_adv[actions], torch.ones(4, 1, dtype=torch.float64),
                              clip_low=None, beta=0.0, agg="token-mean", is_weights=weights)
        loss.backward()
        return logits.grad

    logits = torch.log(p).requires_grad_()
    (-(torch.softmax(logits, dim=0) * action_adv).sum()).backward()  # -E_p[A]
    on_policy = logits.grad
    # by hand: grad log p_a = e_a - p, so -sum_a w_a A_a (e_a - p) with w = p for on-policy, q for the engine
    by_hand = lambda w: -sum(w[a] * action_adv[a] * (torch.eye(3, dtype=torch.float64)[a] - p) for a in range(3))
    assert on_policy.tolist() == pytest.approx(by_hand(p).tolist(), abs=1e-12)
    uncorrected = gradient(None)
    assert uncorrected.tolist() == pytest.approx(by_hand(q).tolist(), abs=1e-12)
    assert float((uncorrected - on_policy).norm()) > 0.1  # the mismatch biases the gradient
    # cap above max p/q = 2: every weight is the full ratio p/q and the gradient is the on-policy one
    assert gradient(10.0).tolist() == pytest.approx(on_policy.tolist(), abs=1e-12)
    # cap 1.5 truncates action 0 (ratio 2): weights (1.5, 1.2, 0.4) -> q * w = (0.375, 0.3, 0.2)
    truncated = gradient(1.5)
    assert truncated.tolist() == pytest.approx(by_hand(torch.tensor([0.375, 0.3, 0.2], dtype=torch.float64)).tolist(), abs=1e-12)
    assert float((truncated - on_policy).norm()) < 0.5 * float((uncorrected - on_policy).norm())


def test_is_weights_scale_the_surrogate_but_not_the_kl_term():
    logp, old_logp, ref_logp, advantages, mask = batch(seed=5)
    base, _ = policy_loss(logp, old_logp, ref_logp, advantages, mask, clip_low=0.2, beta=0.0)
    ones, _ = policy_loss(logp, old_logp, ref_logp, advantages, mask, clip_low=0.2, beta=0.0,
                          is_weights=torch.ones_like(logp))
    doubled, _ = policy_loss(logp, old_logp, ref_logp, advantages, mask, clip_low=0.2, beta=0.0,
                             is_weights=torch.full_like(logp, 2.0))
    assert ones.item() == base.item() and doubled.item() == pytest.approx(2 * base.item(), rel=1e-12)
    kl_only, _ = policy_loss(logp, old_logp, ref_logp, torch.zeros(3, dtype=logp.dtype), mask, beta=0.04)
    kl_weighted, _ = policy_loss(logp, old_logp, ref_logp, torch.zeros(3, dtype=logp.dtype), mask, beta=0.04,
                                 is_weights=torch.full_like(logp, 2.0))
    assert kl_weighted.item() == kl_only.item() > 0  # A = 0: only the KL term, which the weights leave alone
    with pytest.raises(ValueError, match="is_weights"):
        policy_loss(logp, old_logp, ref_logp, advantages, mask, is_weights=torch.ones(3, 4))


def test_overlong_penalty_hand_computed():
    # L_max = 10, buffer 4: no penalty up to 6 tokens, then -0.5 * (L - 6) / 4, reaching -0.5 at 10 and beyond
    lengths = torch.tensor([0, 6, 7, 8, 10, 12])
    penalty = overlong_penalty(lengths, max_new_tokens=10, buffer=4, factor=0.5)
    assert penalty.tolist() == [0.0, 0.0, -0.125, -0.25, -0.5, -0.5]
    assert overlong_penalty(lengths, 10, buffer=0, factor=0.5).tolist() == [0.0] * 6  # off
    assert overlong_penalty(torch.tensor([9]), 10, buffer=1).tolist() == [0.0]  # buffer 1: only L = 10 is hit
    assert overlong_penalty(torch.tensor([10]), 10, buffer=1).tolist() == [-1.0]
    assert lengths.tolist() == [0, 6, 7, 8, 10, 12]  # input untouched
    with pytest.raises(ValueError, match="below max_new_tokens"):
        overlong_penalty(lengths, 10, buffer=10)
    with pytest.raises(ValueError, match=">= 0"):
        overlong_penalty(lengths, 10, buffer=4, factor=-1.0)
