"""PPO epochs, mini-batches and engine/learner mismatch correction in LearnerActor (tiny VLM, CPU, gloo, fp32).

- epochs=1, mini_batches=1 is the released update bit for bit: the same weights as a hand-written loop of
  `policy_loss` over the micro-batches, weighted by their share of sequences, with one optimizer step;
- mini_batches=2 is two optimizer steps, one per group, whose old log-probs are those before the first update;
- epochs=2 recomputes the old log-probs once, so the second pass sees ratios != 1 and clips (hand-computed);
- the schedule advances once per rollout batch, however many optimizer steps the batch takes;
- policy/engine_kl is 0 when the engine's log-probs are the learner's and the k3 value of a known offset
  otherwise; TIS scales each token's policy gradient by min(exp(learner - engine), cap) (seen in the gradient norm);
- two ranks (Ray) take the same optimizer steps, stay bitwise identical and match one rank on the same batch.
"""

from __future__ import annotations

import math

import pytest
import torch
from learner_helpers import learner_config, make_items, max_abs_diff, with_logprobs

from learner.actor import LearnerActor
from learner.grpo import policy_loss
from segr1.rendezvous import free_port

UPDATE_TOLERANCE = 2e-6  # as in test_learner.py: fp32 sums in another order, on weights that move by ~1e-3


def new_actor(model_path: str, *overrides: str) -> LearnerActor:
    return LearnerActor(learner_config(*overrides), model_path, 0, 1, "127.0.0.1", free_port())


def released_update(actor: LearnerActor, items) -> None:
    """Seg-R1's update written out: old log-probs are the engine's, each micro-batch's loss weighs its share of
    the batch's sequences, gradients accumulate, one optimizer step."""
    from learner.batching import train_records

    algo = actor.cfg.algorithm
    batches = actor._micro_batches(train_records(items, actor._vision(items)))
    total = sum(mb.size for mb in batches)
    actor.engine.train()
    for mb in batches:
        mb = mb.to(actor.device, actor.dtype)
        logp, _ = actor._logprobs(actor.engine, mb)
        with torch.no_grad():
            ref, _ = actor._logprobs(actor.reference, mb)
        loss, _ = policy_loss(logp, mb.rollout_logprobs, ref, mb.advantages, mb.loss_mask, clip_low=algo.clip_low,
                              clip_high=algo.clip_high, beta=algo.beta, kl=algo.kl, agg=algo.agg,
                              max_len=actor.cfg.rollout.max_new_tokens)
        actor.engine.backward(loss * (mb.size / total), scale_wrt_gas=False)
    actor.engine.step()


def test_one_epoch_one_mini_batch_is_the_released_update_bit_for_bit(model_path, processor):
    items = make_items(processor, num_groups=2, seed=5)
    ours = new_actor(model_path, "learner.zero_stage=0")
    start = ours.full_state_dict()
    # engine log-probs that differ from the learner's, so the ratio is not 1 and the old log-probs matter
    items = with_logprobs(items, [[[x - 0.1 for x in seq] for seq in group] for group in ours.logprobs(items)])
    ours.train_step(items)
    theirs = new_actor(model_path, "learner.zero_stage=0")
    released_update(theirs, items)
    after = ours.full_state_dict()
    assert max_abs_diff(after, start) > 1e-4  # the step moved the weights
    assert max_abs_diff(after, theirs.full_state_dict()) == 0.0


def test_two_mini_batches_are_two_steps_from_the_pre_update_log_probs(model_path, processor):
    """mini_batches=2 on groups g0, g1 = one released step on g0, then one on g1 whose old log-probs are still
    those before the first step (here handed over as the engine's, which then equal the learner's)."""
    items = make_items(processor, num_groups=2, seed=6)
    ours = new_actor(model_path, "algorithm.mini_batches=2")
    items = with_logprobs(items, ours.logprobs(items))  # engine == learner before the update
    stats = ours.train_step(items)
    theirs = new_actor(model_path)
    first, second = theirs.train_step(items[:1]), theirs.train_step(items[1:])
    assert stats["policy/optimizer_steps"] == 2.0 and ours.step == 1
    assert max_abs_diff(ours.full_state_dict(), theirs.full_state_dict()) < UPDATE_TOLERANCE
    assert stats["policy/loss"] == pytest.approx((first["policy/loss"] + second["policy/loss"]) / 2, rel=1e-5)
    assert stats["policy/grad_norm"] == pytest.approx((first["policy/grad_norm"] + second["policy/grad_norm"]) / 2,
                                                      rel=1e-5)
    assert stats["policy/tokens"] == first["policy/tokens"] + second["policy/tokens"]


def test_second_epoch_sees_moved_ratios_and_clips(model_path, processor):
    """epochs=2 with a large step: the first pass has ratio 1 (old log-probs recomputed from the same weights, so
    nothing clips), the second pass uses the weights after one step, whose ratios clip. The expected clip
    fraction is computed by hand from a one-epoch learner's log-probs after its (identical) first step."""
    overrides = ("learner.lr=1e-2", "algorithm.clip_low=0.2", "learner.lr_schedule=linear")
    items = make_items(processor, num_groups=2, seed=7)
    ours = new_actor(model_path, "algorithm.epochs=2", *overrides)
    old = ours.logprobs(items)
    items = with_logprobs(items, old)
    stats = ours.train_step(items)
    one_epoch = new_actor(model_path, "learner.recompute_old_logp=true", *overrides)
    first = one_epoch.train_step(items)
    assert first["policy/clip_frac"] == 0.0  # ratio exactly 1 on the only pass

    after_one_step = one_epoch.logprobs(items)  # what the second pass sees
    clipped = tokens = 0
    for item, group_old, group_new in zip(items, old, after_one_step):
        for advantage, seq_old, seq_new in zip(item.advantages, group_old, group_new):
            for lo, ln in zip(seq_old, seq_new):
                ratio = math.exp(ln - lo)
                clipped += (advantage > 0 and ratio > 1.2) or (advantage < 0 and ratio < 0.8)
                tokens += 1
    assert clipped > 1  # the step moved ratios out of [0.8, 1.2] (by more than the one token of slack below)
    # averaged over both passes' tokens; a token within float rounding of the clip bound may fall either way
    assert stats["policy/clip_frac"] == pytest.approx(clipped / (2 * tokens), abs=1.01 / (2 * tokens))
    assert stats["policy/optimizer_steps"] == 2.0 and stats["policy/tokens"] == tokens
    # the schedule advanced once for the batch, not once per optimizer step
    assert stats["policy/lr"] == pytest.approx(1e-2) and ours.current_lr() == pytest.approx(1e-2 * (1 - 1 / 8))
    assert max_abs_diff(ours.full_state_dict(), one_epoch.full_state_dict()) > 1e-4  # the second step moved on


def test_engine_kl_and_truncated_importance_sampling(model_path, processor):
    """Engine log-probs = learner's + a constant offset delta on every token. engine_kl is k3 = exp(-delta) +
    delta - 1; TIS weighs every token's gradient by min(exp(-delta), cap), so (beta = 0, ratio 1) the gradient
    norm is that weight times the on-policy one. Without TIS the released path uses the engine's log-probs as
    the old ones, so its ratio exp(-delta) weighs the gradient untruncated."""
    items = make_items(processor, num_groups=2, seed=8)
    on_policy_actor = new_actor(model_path, "algorithm.beta=0")
    learner = on_policy_actor.logprobs(items)
    shifted = lambda delta: with_logprobs(items, [[[x + delta for x in seq] for seq in g] for g in learner])
    on_policy = on_policy_actor.train_step(shifted(0.0))
    assert on_policy["policy/engine_kl"] == pytest.approx(0.0, abs=1e-7)
    assert "policy/tis_weight_mean" not in on_policy

    for delta, cap, weight in ((-0.5, 1.2, 1.2), (0.5, 2.0, math.exp(-0.5))):
        stats = new_actor(model_path, "algorithm.beta=0", f"algorithm.tis_cap={cap}").train_step(shifted(delta))
        assert stats["policy/engine_kl"] == pytest.approx(math.exp(-delta) + delta - 1, rel=1e-4), delta
        assert stats["policy/tis_weight_mean"] == pytest.approx(weight, rel=1e-5), delta
        assert stats["policy/grad_norm"] == pytest.approx(weight * on_policy["policy/grad_norm"], rel=1e-4), delta
    untruncated = new_actor(model_path, "algorithm.beta=0").train_step(shifted(-0.5))
    assert untruncated["policy/grad_norm"] == pytest.approx(math.exp(0.5) * on_policy["policy/grad_norm"], rel=1e-4)


def _update(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(after[k] - before[k]).flatten() for k in before])


@pytest.mark.ray
@pytest.mark.slow
def test_two_ranks_reuse_the_batch_in_lock_step(model_path, processor):
    import ray

    from learner.group import LearnerGroup

    overrides = ("algorithm.epochs=2", "algorithm.mini_batches=2", "algorithm.clip_low=0.2")
    items = make_items(processor, num_groups=4, seed=9)
    single = new_actor(model_path, *overrides)
    items = with_logprobs(items, single.logprobs(items))
    start = single.full_state_dict()
    single_stats = single.train_step(items)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        group = LearnerGroup(learner_config("learner.num_ranks=2", "learner.num_cpus=1", *overrides), model_path)
        stats = group.train_step(items)  # rank 0: g0 | g1, rank 1: g2 | g3 -> mini-batches {g0, g2}, {g1, g3}
        rank0 = group.full_state_dict(0)
        assert max_abs_diff(rank0, group.full_state_dict(1)) == 0.0
        assert stats["policy/optimizer_steps"] == single_stats["policy/optimizer_steps"] == 4.0
        # the same mini-batches as one rank, summed in another fp32 order (see test_learner.py's two-rank test)
        reference = _update(single.full_state_dict(), start)
        assert float((_update(rank0, start) - reference).norm() / reference.norm()) < 1e-3
        for key in ("policy/loss", "policy/kl", "policy/tokens", "policy/engine_kl"):
            assert stats[key] == pytest.approx(single_stats[key], rel=1e-4, abs=1e-6), key
        # three groups: rank 1 holds one, so both ranks take one optimizer step per epoch, still in lock step
        uneven = group.train_step(items[:3])
        assert uneven["policy/optimizer_steps"] == 2.0
        assert max_abs_diff(group.full_state_dict(0), group.full_state_dict(1)) == 0.0
        group.shutdown()
    finally:
        ray.shutdown()
