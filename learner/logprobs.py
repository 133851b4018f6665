"""Teacher-forced per-token log-probabilities (and entropy) of completions under a VLM, for one micro-batch.

The rollout engine sampled from softmax(logits / temperature) with the non-output special tokens (image pads,
vision markers; segr1.chat.non_output_token_ids) masked out; the learner scores that same distribution, so the
importance ratio is 1 when the weights did not change. (Top-p truncation is not applied: it is not
differentiable and, with the paper's top_p = 1, it is the identity.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from learner.batching import MicroBatch


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                   with_entropy: bool = False, masked_ids: Sequence[int] = ()
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(targets) and optionally the entropy of each position's distribution.

    logits: [B, C, V] (any float dtype; computed in fp32), targets: [B, C] long -> ([B, C], [B, C] | None).
    `masked_ids` get probability 0 (as in the engine's sampler).
    """
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float()
    if len(masked_ids):
        index = torch.tensor(list(masked_ids), dtype=torch.long, device=scaled.device)
        scaled = scaled.index_fill(-1, index, float("-inf"))  # out of place: logits stay intact for autograd
    log_norm = torch.logsumexp(scaled, dim=-1)  # [B, C]
    logp = scaled.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        with torch.no_grad():  # a logged statistic only: no gradient through it
            probs = torch.softmax(scaled, dim=-1)
            entropy = log_norm - torch.where(probs > 0, probs * scaled, 0.0).sum(-1)  # 0 * -inf counts as 0
    return logp, entropy


def completion_logprobs(
    model: Callable[..., object],
    batch: MicroBatch,
    *,
    image_token_id: int,
    video_token_id: int | None,
    temperature: float = 1.0,
    with_entropy: bool = False,
    masked_ids: Sequence[int] = (),
    encode_images_once: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [B, C] of `batch.completion_ids` under `model` (an HF VLM or a DeepSpeed engine).

    Only the last C + 1 positions are turned into logits (`logits_to_keep`): the prompt's logits are never
    materialised, which matters with a 150k-token vocabulary. `encode_images_once`: rows that share an image
    share one vision-tower pass (learner/shared_images.py).
    """
    inputs = batch.model_inputs(image_token_id, video_token_id)
    if encode_images_once:
        from learner.shared_images import shared_image_inputs

        inputs = shared_image_inputs(model, inputs, batch.sources)
    out = model(**inputs, use_cache=False)
    logits = out.logits[:, :-1]  # [B, C, V]: position t predicts completion token t
    logp, entropy = token_logprobs(logits, batch.completion_ids, temperature, with_entropy, masked_ids)
    # padding may hold a masked id (log p = -inf): zero it so masked sums stay finite (0 * inf is NaN)
    padding = torch.arange(logp.shape[1], device=logp.device)[None, :] >= batch.completion_lengths[:, None]
    return logp.masked_fill(padding, 0.0), entropy
