"""Turns learner records (TrainItem groups, SFTItems) into padded micro-batches for a Qwen2.5-VL forward.

Layout of one micro-batch row: the prompt is LEFT-padded to the longest prompt and the completion is
RIGHT-padded to the longest completion, so every completion starts at the same column `prompt_len`:

    [pad pad <prompt ...........>][<completion ....> pad pad]
     0                 prompt_len-1 prompt_len             T-1

Then the logits that predict the completion are simply the last `completion_len + 1` positions (the model's
`logits_to_keep`), and every per-token tensor of the loss is [B, C] with C = completion_len.
The loss mask covers completion tokens up to and including the first EOS (tokens after it were never meant to
be sampled); a completion without EOS (cut at max_new_tokens) counts all its tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segr1.protocol import SFTItem, TrainItem


@dataclass(frozen=True)
class SequenceRecord:
    """One prompt + completion row before padding. `source` = (item index, completion index)."""

    source: tuple[int, int]
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    rollout_logprobs: list[float] | None
    vision: dict[str, torch.Tensor]  # pixel_values [P, D], image_grid_thw [1, 3] of the row's image


@dataclass(frozen=True)
class MicroBatch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    pixel_values: torch.Tensor  # [sum of patches, D]
    image_grid_thw: torch.Tensor  # [B, 3]
    prompt_len: int  # column where every completion starts
    completion_ids: torch.Tensor  # [B, C] long (= input_ids[:, prompt_len:])
    loss_mask: torch.Tensor  # [B, C] float: 1 on completion tokens up to and incl. the first EOS
    completion_lengths: torch.Tensor  # [B] long: real (unpadded) completion lengths
    advantages: torch.Tensor  # [B] float
    rollout_logprobs: torch.Tensor | None  # [B, C] float (0 on padding), None for SFT
    sources: list[tuple[int, int]]

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def model_inputs(self, image_token_id: int, video_token_id: int | None) -> dict[str, Any]:
        """Keyword arguments for the HF forward (mm_token_type_ids drive Qwen2.5-VL's 3-D rotary positions)."""
        types = (self.input_ids == image_token_id).long()
        if video_token_id is not None:
            types = types + 2 * (self.input_ids == video_token_id).long()
        return {
            "input_ids": self.input_ids, "attention_mask": self.attention_mask, "mm_token_type_ids": types,
            "pixel_values": self.pixel_values, "image_grid_thw": self.image_grid_thw,
            "logits_to_keep": self.completion_ids.shape[1] + 1,
        }

    def to(self, device: torch.device | str, float_dtype: torch.dtype | None = None) -> MicroBatch:
        """A copy on `device`; pixel values cast to the model's dtype when given."""
        pixels = self.pixel_values.to(device, dtype=float_dtype or self.pixel_values.dtype)
        move = {k: getattr(self, k).to(device) for k in (
            "input_ids", "attention_mask", "image_grid_thw", "completion_ids", "loss_mask",
            "completion_lengths", "advantages")}
        logprobs = None if self.rollout_logprobs is None else self.rollout_logprobs.to(device)
        return MicroBatch(pixel_values=pixels, rollout_logprobs=logprobs, prompt_len=self.prompt_len,
                          sources=self.sources, **move)


def eos_mask(completion_ids: torch.Tensor, lengths: torch.Tensor, eos_ids: Iterable[int]) -> torch.Tensor:
    """[B, C] float mask: positions < length and up to and including the first EOS of each row."""
    _, width = completion_ids.shape
    positions = torch.arange(width)[None, :]  # [1, C]
    valid = positions < lengths[:, None]  # [B, C]
    is_eos = torch.isin(completion_ids, torch.tensor(sorted(set(eos_ids)), dtype=completion_ids.dtype)) & valid
    # EOS tokens strictly before each position: a position is kept while none has been seen yet
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (valid & (eos_before == 0)).float()


def train_records(items: Sequence[TrainItem], vision: Sequence[dict[str, torch.Tensor]]) -> list[SequenceRecord]:
    """One record per completion, in item order; checks that each group's lists line up."""
    records = []
    for i, (item, vis) in enumerate(zip(items, vision, strict=True)):
        g = len(item.completion_ids)
        if len(item.advantages) != g or len(item.rollout_logprobs) != g:
            raise ValueError(
                f"TrainItem {item.sample_id!r}: {g} completions but {len(item.advantages)} advantages and "
                f"{len(item.rollout_logprobs)} logprob lists")
        for j, (ids, logps) in enumerate(zip(item.completion_ids, item.rollout_logprobs)):
            if len(ids) != len(logps):
                raise ValueError(f"TrainItem {item.sample_id!r} completion {j}: {len(ids)} tokens but "
                                 f"{len(logps)} rollout logprobs")
            records.append(SequenceRecord((i, j), list(item.prompt_ids), list(ids), float(item.advantages[j]),
                                          list(logps), vis))
    return records


def sft_records(items: Sequence[SFTItem], vision: Sequence[dict[str, torch.Tensor]]) -> list[SequenceRecord]:
    records = []
    for i, (item, vis) in enumerate(zip(items, vision, strict=True)):
        if not item.target_ids:
            raise ValueError(f"SFTItem {item.sample_id!r}: empty target_ids")
        records.append(SequenceRecord((i, 0), list(item.prompt_ids), list(item.target_ids), 0.0, None, vis))
    return records


def collate(records: Sequence[SequenceRecord], eos_ids: Iterable[int], pad_id: int) -> MicroBatch:
    """Pad `records` into one micro-batch (layout in the module docstring)."""
    if not records:
        raise ValueError("cannot collate an empty micro-batch")
    prompt_len = max(len(r.prompt_ids) for r in records)
    completion_len = max(1, max(len(r.completion_ids) for r in records))
    rows = len(records)
    input_ids = torch.full((rows, prompt_len + completion_len), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    logprobs = torch.zeros(rows, completion_len, dtype=torch.float32)
    for b, r in enumerate(records):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        input_ids[b, prompt_len - p:prompt_len] = torch.tensor(r.prompt_ids, dtype=torch.long)
        input_ids[b, prompt_len:prompt_len + c] = torch.tensor(r.completion_ids, dtype=torch.long)
        attention[b, prompt_len - p:prompt_len + c] = 1
        if r.rollout_logprobs is not None:
            logprobs[b, :c] = torch.tensor(r.rollout_logprobs, dtype=torch.float32)
    lengths = torch.tensor([len(r.completion_ids) for r in records], dtype=torch.long)
    completion_ids = input_ids[:, prompt_len:]
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention,
        pixel_values=torch.cat([r.vision["pixel_values"] for r in records]),
        image_grid_thw=torch.cat([r.vision["image_grid_thw"] for r in records]),
        prompt_len=prompt_len,
        completion_ids=completion_ids,
        loss_mask=eos_mask(completion_ids, lengths, eos_ids),
        completion_lengths=lengths,
        advantages=torch.tensor([r.advantage for r in records], dtype=torch.float32),
        rollout_logprobs=None if any(r.rollout_logprobs is None for r in records) else logprobs,
        sources=[r.source for r in records],
    )


def mini_batch_records(records: Sequence[SequenceRecord], parts: int) -> list[list[SequenceRecord]]:
    """`records` split into `parts` mini-batches of whole groups (one optimizer step each): group i (the item
    index in `source`) goes to mini-batch i % parts, record order kept within each.

    Strided rather than contiguous so the split does not depend on the rank count: the learner group hands each
    rank a contiguous shard of the batch's groups, and when every shard's size is a multiple of `parts`, the
    union over ranks of their m-th mini-batches is exactly the one-rank m-th mini-batch.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    groups = sorted({r.source[0] for r in records})
    if len(groups) < parts:
        raise ValueError(f"{len(groups)} groups cannot fill {parts} mini-batches of whole groups")
    slot = {group: rank % parts for rank, group in enumerate(groups)}
    return [[r for r in records if slot[r.source[0]] == m] for m in range(parts)]


def micro_batches(records: Sequence[SequenceRecord], micro_batch_size: int, eos_ids: Iterable[int],
                  pad_id: int) -> list[MicroBatch]:
    """Consecutive chunks of `micro_batch_size` records (order kept, so results map back by position)."""
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    eos = list(eos_ids)
    return [collate(records[i:i + micro_batch_size], eos, pad_id) for i in range(0, len(records), micro_batch_size)]
