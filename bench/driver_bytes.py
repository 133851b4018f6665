"""Benchmark: bytes the driver serialises per training step, pixels by value (before) against by reference (after).

Run:  .venv/bin/python bench/driver_bytes.py [--frame 768] [--prompts 24] [--group 4] [--tokens 120]
      (``make bench`` runs it with the defaults.)

One step sends three kinds of record that name an image: a GenerationRequest per prompt (rollout), a
RewardRequest per group (reward, with the ground-truth mask) and a TrainItem per group (learner). Before, each
carried the pixels by value; now each carries the ArrayRefs that cluster.records.by_reference stores once per
sample. The script builds the records of one step with the real functions the controller calls
(cluster.records), on B synthetic samples in the training frame and G completions of `--tokens` tokens each,
and counts what pickle protocol 5 produces for each: the in-band bytes plus every out-of-band buffer (what
Ray's serialiser ships for a numpy array). "After" runs under a local Ray, so the references are real
ObjectRefs, and it also counts the one put per image and mask, which still copies those bytes into the object
store. Prints a table per record and the ratios: records alone, and records plus the puts.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root before bench/ (see common.py)

import numpy as np

from bench.common import print_table
from cluster import records
from segr1.data.synth import synth_sample
from segr1.protocol import Completion, RolloutGroup, Sample


def serialised_bytes(obj: object) -> int:
    """Pickle protocol 5 bytes, out-of-band buffers included (as Ray's serialiser splits a numpy array)."""
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(memoryview(b).nbytes for b in buffers)


def step_inputs(frame: int, prompts: int, group: int, tokens: int) -> tuple[list[Sample], list[RolloutGroup]]:
    """B samples in the frame and one rollout group of G completions per sample (token ids, logprobs, text)."""
    rng = np.random.default_rng(0)
    samples, groups = [], []
    for i in range(prompts):
        image, mask = synth_sample(seed=0, index=i, size=frame)
        samples.append(Sample(f"s{i}", image, mask, "Segment the camouflaged animal."))
        completions = [Completion("<think>" + "x" * (4 * tokens) + "</think>", rng.integers(0, 150_000, tokens).tolist(),
                                  (-rng.random(tokens)).tolist(), "stop") for _ in range(group)]
        groups.append(RolloutGroup(f"s{i}", rng.integers(0, 150_000, 300).tolist(), completions, weights_version=1))
    return samples, groups


def records_bytes(samples: list[Sample], groups: list[RolloutGroup]) -> dict[str, int]:
    """Bytes of one step's records, built from `samples` as the controller builds them."""
    advantages = np.zeros(sum(len(g.completions) for g in groups))
    return {
        "GenerationRequest": sum(map(serialised_bytes, records.generation_requests(samples))),
        "RewardRequest": sum(map(serialised_bytes, records.reward_requests(samples, groups))),
        "TrainItem": sum(map(serialised_bytes, records.train_items(samples, groups, advantages))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=int, default=768)
    parser.add_argument("--prompts", type=int, default=24, help="B: prompts per step")
    parser.add_argument("--group", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--tokens", type=int, default=120, help="tokens per completion")
    args = parser.parse_args()

    import ray

    samples, groups = step_inputs(args.frame, args.prompts, args.group, args.tokens)
    before = records_bytes(samples, groups)  # arrays in every record: what each record pickled until now

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        referenced = records.by_reference(samples)  # the controller's one put per image and mask
        assert all(isinstance(s.image.value, ray.ObjectRef) for s in referenced)
        after = records_bytes(referenced, groups)
        puts = sum(serialised_bytes(a) for s in samples for a in (s.image, s.mask))
    finally:
        ray.shutdown()

    mb = 1e6
    rows = [(name, before[name] / mb, after[name] / mb) for name in before]
    rows.append(("object-store puts (image + mask, once per sample)", 0.0, puts / mb))
    total_before, total_records = sum(before.values()), sum(after.values())
    rows.append(("total", total_before / mb, (total_records + puts) / mb))
    print(f"frame {args.frame}, B={args.prompts}, G={args.group}, {args.tokens} tokens per completion")
    print_table("driver's serialised bytes per step (MB)", ["what", "by value (before)", "by reference (after)"],
                rows)
    print(f"records alone: {total_before / mb:.1f} MB -> {total_records / mb:.3f} MB, "
          f"{total_before / total_records:.0f}x fewer bytes pickled into requests")
    print(f"records + the puts: {total_before / mb:.1f} MB -> {(total_records + puts) / mb:.1f} MB, "
          f"{total_before / (total_records + puts):.1f}x fewer bytes serialised by the driver")


if __name__ == "__main__":
    main()
