"""learner.batching / logprobs / step_math: padded layout, EOS loss mask, teacher-forced log-probs against
unpadded forwards of the real tiny VLM, and micro-batch weights that reproduce the full-batch GRPO loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.batching import collate, eos_mask, micro_batches, mini_batch_records, sft_records, train_records
from learner.grpo import policy_loss
from learner.logprobs import completion_logprobs, token_logprobs
from learner.step_math import LossWeights
from segr1.protocol import SFTItem, TrainItem

EOS, PAD = 2, 0


def _vision(patches: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.full((patches, 3), float(patches)), "image_grid_thw": torch.tensor([[1, 2, 2]])}


def _item(name: str, prompt: list[int], completions: list[list[int]]) -> TrainItem:
    return TrainItem(name, np.zeros((4, 4, 3), np.uint8), prompt, completions,
                     advantages=[float(i + 1) for i in range(len(completions))],
                     rollout_logprobs=[[-0.5 - t for t in range(len(c))] for c in completions])


def test_eos_mask_hand_computed():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 0, 0], [4, 2, 2, 2]])
    lengths = torch.tensor([4, 3, 2, 2])
    mask = eos_mask(ids, lengths, [EOS])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]


def test_collate_layout_hand_computed():
    items = [_item("a", [11, 12, 13], [[21, 2]]), _item("b", [14, 15, 16, 17, 18], [[22, 23, 24, 25]])]
    records = train_records(items, [_vision(4), _vision(8)])
    mb = collate(records, eos_ids=[EOS], pad_id=PAD)
    assert mb.prompt_len == 5
    assert mb.input_ids.tolist() == [[0, 0, 11, 12, 13, 21, 2, 0, 0], [14, 15, 16, 17, 18, 22, 23, 24, 25]]
    assert mb.attention_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 0, 0], [1] * 9]
    assert mb.completion_ids.tolist() == [[21, 2, 0, 0], [22, 23, 24, 25]]
    assert mb.loss_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert mb.rollout_logprobs.tolist() == [[-0.5, -1.5, 0, 0], [-0.5, -1.5, -2.5, -3.5]]
    assert mb.advantages.tolist() == [1.0, 1.0] and mb.completion_lengths.tolist() == [2, 4]
    assert mb.pixel_values.shape == (12, 3) and mb.pixel_values[4:, 0].eq(8).all()  # row order kept
    assert mb.image_grid_thw.shape == (2, 3)
    assert mb.model_inputs(image_token_id=12, video_token_id=None)["logits_to_keep"] == 5


def test_micro_batches_keep_order_and_sizes():
    items = [_item("a", [1], [[3], [4], [5]]), _item("b", [1, 1], [[6], [7]])]
    batches = micro_batches(train_records(items, [_vision(4), _vision(4)]), 2, [EOS], PAD)
    assert [mb.size for mb in batches] == [2, 2, 1]
    assert [s for mb in batches for s in mb.sources] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_mini_batches_keep_whole_groups_and_do_not_depend_on_the_rank_count():
    items = [_item(f"g{i}", [1], [[3 + i], [4 + i]]) for i in range(4)]
    records = train_records(items, [_vision(4)] * 4)
    one_rank = mini_batch_records(records, 2)
    assert [[r.source for r in part] for part in one_rank] == [
        [(0, 0), (0, 1), (2, 0), (2, 1)], [(1, 0), (1, 1), (3, 0), (3, 1)]]  # groups 0, 2 | 1, 3
    # two ranks get the contiguous shards g0 g1 | g2 g3 (learner.group.shard); their m-th mini-batches together
    # are the one-rank m-th mini-batch
    shards = [train_records(items[:2], [_vision(4)] * 2), train_records(items[2:], [_vision(4)] * 2)]
    per_rank = [mini_batch_records(shard, 2) for shard in shards]
    for m in range(2):
        together = sorted(r.completion_ids[0] for rank in per_rank for r in rank[m])
        assert together == sorted(r.completion_ids[0] for r in one_rank[m])
    assert mini_batch_records(records, 1) == [records]
    with pytest.raises(ValueError, match="4 groups cannot fill 5 mini-batches"):
        mini_batch_records(records, 5)


def test_bad_records_name_the_item():
    bad = TrainItem("s7", np.zeros((4, 4, 3), np.uint8), [1], [[3, 4]], [1.0], [[-1.0]])
    with pytest.raises(ValueError, match="'s7' completion 0: 2 tokens but 1 rollout logprobs"):
        train_records([bad], [_vision(4)])
    with pytest.raises(ValueError, match="'s8': empty target_ids"):
        sft_records([SFTItem("s8", np.zeros((4, 4, 3), np.uint8), [1], [])], [_vision(4)])


def test_token_logprobs_match_torch_distributions_with_mask_and_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g)
    targets = torch.tensor([[1, 4, 10], [0, 2, 3]])
    logp, entropy = token_logprobs(logits, targets, temperature=0.7, with_entropy=True, masked_ids=[5, 6])
    masked = (logits / 0.7).index_fill(-1, torch.tensor([5, 6]), float("-inf"))
    dist = torch.distributions.Categorical(logits=masked)
    torch.testing.assert_close(logp, dist.log_prob(targets), rtol=0, atol=1e-6)
    torch.testing.assert_close(entropy, dist.entropy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_weighted_micro_batch_losses_equal_the_full_batch_loss(agg):
    g = torch.Generator().manual_seed(1)
    lengths = [3, 7, 1, 5, 6]
    items = [_item(f"s{i}", [1, 1], [[9] * n]) for i, n in enumerate(lengths)]
    records = train_records(items, [_vision(4)] * len(items))
    full = collate(records, [EOS], PAD)
    logp = -torch.rand(full.completion_ids.shape, generator=g)
    old = logp - 0.1 * torch.rand(logp.shape, generator=g)
    ref = logp + 0.2 * torch.rand(logp.shape, generator=g)
    adv = torch.randn(len(items), generator=g)
    kwargs = {"clip_low": 0.2, "clip_high": 0.28, "beta": 0.04, "kl": "k3", "agg": agg, "max_len": 16}
    want, _ = policy_loss(logp, old, ref, adv, full.loss_mask, **kwargs)
    batches = micro_batches(records, 2, [EOS], PAD)
    plan = LossWeights.build(batches, agg, world_size=1, device=torch.device("cpu"))
    got, row = torch.zeros(()), 0
    for mb in batches:
        rows, width = slice(row, row + mb.size), mb.completion_ids.shape[1]
        loss, _ = policy_loss(logp[rows, :width], old[rows, :width], ref[rows, :width], adv[rows], mb.loss_mask,
                              **kwargs)
        got, row = got + plan.weight(mb) * loss, row + mb.size
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_padded_logprobs_equal_unpadded_forwards_of_the_tiny_vlm(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rollout.tiny_model import ensure_tiny_vlm
    from segr1.chat import encode_prompt, image_inputs, mm_token_type_ids

    path = ensure_tiny_vlm(str(tmp_path / "tiny"))
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    rng = np.random.default_rng(0)
    items, vision = [], []
    for i, (frame, n) in enumerate([(56, 4), (112, 9)]):  # different image sizes -> different prompt lengths
        image = rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8)
        prompt, _ = encode_prompt(processor, image, "Segment it." + " now" * i, frame, system_prompt="Be brief.")
        comps = [[int(t) for t in rng.integers(10, 300, n)], [int(t) for t in rng.integers(10, 300, n - 2)]]
        items.append(TrainItem(f"s{i}", image, prompt, comps, [0.0, 0.0], [[0.0] * len(c) for c in comps]))
        vision.append(image_inputs(processor, [image]))
    mb = collate(train_records(items, vision), [EOS], processor.tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, mb, image_token_id=model.config.image_token_id, video_token_id=None)
        for row, (i, j) in enumerate(mb.sources):
            ids = torch.tensor([items[i].prompt_ids + items[i].completion_ids[j]])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           mm_token_type_ids=mm_token_type_ids(ids, model.config.image_token_id),
                           **vision[i]).logits[0]
            p, n = len(items[i].prompt_ids), len(items[i].completion_ids[j])
            want = torch.log_softmax(logits[p - 1:p - 1 + n], -1).gather(-1, ids[0, p:, None])[:, 0]
            torch.testing.assert_close(logp[row, :n], want, rtol=0, atol=1e-5)
            assert logp[row, n:].eq(0).all()  # padding is zeroed
