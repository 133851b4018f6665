"""`segr1 predict`: segment one image with a trained policy (in-process, no Ray cluster needed).

    segr1 predict --checkpoint runs/local_cpu/hf_model --image photo.jpg --out mask.png --overlay overlay.png

The image is resized to the training frame, the policy writes its prompt greedily, the run's segmenter turns
it into a mask, and the mask is resized back to the image's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from segr1.config import Config, load_config


def _run_config(checkpoint: Path, config: str | None, overrides: Sequence[str]) -> Config:
    """The given config, else the run's own config.yaml (runs/<name>/config.yaml above the checkpoint)."""
    if config is None:
        for parent in checkpoint.resolve().parents:
            if (parent / "config.yaml").is_file():
                config = str(parent / "config.yaml")
                break
    return load_config(config, list(overrides))


def predict(checkpoint: str, image: str, out: str, overlay: str | None = None, config: str | None = None,
            instruction: str | None = None, overrides: Sequence[str] = ()) -> np.ndarray:
    from cluster.evaluate import overlay_of
    from cluster.records import rollout_and_score
    from reward_server.actor import RewardActor
    from reward_server.rle import decode_masks
    from rollout.worker import RolloutWorker
    from segr1.chat import FOREGROUND_INSTRUCTION
    from segr1.evaluation import to_original_size
    from segr1.protocol import Sample

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"--checkpoint: no directory at {checkpoint}")
    bgr = cv2.imread(image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"--image: cannot read an image from {image}")
    cfg = _run_config(ckpt, config, overrides)
    frame = cfg.data.frame_size
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    framed = cv2.resize(rgb, (frame, frame), interpolation=cv2.INTER_LINEAR)
    sample = Sample(sample_id=Path(image).stem, image=framed, mask=np.zeros((frame, frame), bool),
                    instruction=instruction or FOREGROUND_INSTRUCTION)

    scored = rollout_and_score(RolloutWorker(cfg, str(ckpt), "predict"), RewardActor(cfg, "predict"), [sample],
                               cfg.rollout.sampling_params(1, greedy=True), return_masks=True)
    reward = scored.rewards[0]
    text = scored.groups[0].completions[0].text
    print(text)
    if reward.breakdowns[0].reason:
        print(f"the completion did not parse ({reward.breakdowns[0].reason}): the mask is empty")
    mask_frame = decode_masks(reward.masks_rle[:1])[0]
    mask = to_original_size(mask_frame, rgb.shape[:2])  # uint8 0/255 at the image's own size
    cv2.imwrite(out, mask)
    if overlay:
        drawn = overlay_of(framed, np.zeros_like(mask_frame), mask_frame, text, cfg)
        cv2.imwrite(overlay, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"wrote {out}" + (f" and {overlay}" if overlay else ""))
    return mask
