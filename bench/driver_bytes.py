"""Benchmark: bytes the driver serialises per training step: pixels by value, put by the driver, and loaded
by a reader actor (now).

Run:  .venv/bin/python bench/driver_bytes.py [--frame 768] [--prompts 24] [--group 4] [--tokens 120]
      (``make bench`` runs it with the defaults.)

One step sends three kinds of record that name an image: a GenerationRequest per prompt (rollout), a
RewardRequest per group (reward, with the ground-truth mask) and a TrainItem per group (learner). The script
writes B synthetic samples at the frame size to a Parquet file, draws them as each design did and builds the
step's records with the real functions the controller calls (cluster.records), G completions of `--tokens`
tokens per sample, then counts what pickle protocol 5 produces for everything the driver serialises: the
in-band bytes plus every out-of-band buffer (what Ray's serialiser ships for a numpy array).
- by value (the first design): SegDataset.load on the driver, the arrays in every record;
- driver puts (the second): the same load, then one ray.put per image and mask (records.by_reference), the
  records carry ObjectRefs; the puts still copy every pixel out of the driver;
- reader (now, cluster.sample_reader): the driver sends an index per sample to a reader actor, which loads
  and stores the pixels; the actor call's returns are ObjectRefs the driver owns. Counted: the records, the
  call arguments, and any ray.put the driver makes meanwhile (ray.put is wrapped to count; expected none).
Prints a table per record and the ratios against by value.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root before bench/ (see common.py)

import numpy as np

from bench.common import print_table
from cluster import records
from segr1.data.dataset import SegDataset
from segr1.data.synth import synthesize
from segr1.protocol import Completion, RolloutGroup, Sample


def serialised_bytes(obj: object) -> int:
    """Pickle protocol 5 bytes, out-of-band buffers included (as Ray's serialiser splits a numpy array)."""
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(inband) + sum(memoryview(b).nbytes for b in buffers)


def rollout_groups(samples: list[Sample], group: int, tokens: int) -> list[RolloutGroup]:
    """One rollout group of G completions per sample (token ids, logprobs, text), as a 300-token prompt makes."""
    rng = np.random.default_rng(0)
    groups = []
    for s in samples:
        completions = [Completion("<think>" + "x" * (4 * tokens) + "</think>", rng.integers(0, 150_000, tokens).tolist(),
                                  (-rng.random(tokens)).tolist(), "stop") for _ in range(group)]
        groups.append(RolloutGroup(s.sample_id, rng.integers(0, 150_000, 300).tolist(), completions, weights_version=1))
    return groups


def records_bytes(samples: list[Sample], groups: list[RolloutGroup]) -> dict[str, int]:
    """Bytes of one step's records, built from `samples` as the controller builds them."""
    advantages = np.zeros(sum(len(g.completions) for g in groups))
    return {
        "GenerationRequest": sum(map(serialised_bytes, records.generation_requests(samples))),
        "RewardRequest": sum(map(serialised_bytes, records.reward_requests(samples, groups))),
        "TrainItem": sum(map(serialised_bytes, records.train_items(samples, groups, advantages))),
    }


def draw_by_reader(data: object, count: int) -> tuple[list[Sample], int, float]:
    """The reader design's draw, as the controller does it: (samples by reference, bytes the driver put or sent
    as call arguments, seconds the driver spent drawing). ray.put is wrapped to count what the driver puts."""
    import ray

    real_put, put_bytes = ray.put, []

    def counting_put(value: object, *args: object, **kwargs: object) -> object:
        put_bytes.append(serialised_bytes(value))
        return real_put(value, *args, **kwargs)

    ray.put = counting_put
    try:
        t0 = time.perf_counter()
        samples = records.by_reference([data.load(i) for i in range(count)])
        seconds = time.perf_counter() - t0
    finally:
        ray.put = real_put
    call_args = sum(serialised_bytes((i,)) for i in range(count))  # one index per call
    return samples, sum(put_bytes) + call_args, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=int, default=768)
    parser.add_argument("--prompts", type=int, default=24, help="B: prompts per step")
    parser.add_argument("--group", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--tokens", type=int, default=120, help="tokens per completion")
    args = parser.parse_args()

    import ray

    from cluster.sample_reader import RemoteSamples

    with tempfile.TemporaryDirectory() as tmp:
        path = synthesize(Path(tmp) / "train.parquet", n=args.prompts, seed=0, size=args.frame)
        dataset = SegDataset(path, args.frame)
        t0 = time.perf_counter()
        samples = [dataset.load(i) for i in range(args.prompts)]  # what the driver did before the reader
        load_s = time.perf_counter() - t0
        groups = rollout_groups(samples, args.group, args.tokens)
        by_value = records_bytes(samples, groups)

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            put = records.by_reference(samples)
            assert all(isinstance(s.image.value, ray.ObjectRef) for s in put)
            driver_put = records_bytes(put, groups)
            puts = sum(serialised_bytes(a) for s in samples for a in (s.image, s.mask))

            drawn, reader_sent, draw_s = draw_by_reader(RemoteSamples(dataset), args.prompts)
            reader = records_bytes(drawn, groups)
            check = [drawn[0].image.get(), drawn[-1].mask.get()]  # the reader's pixels are the driver's
            assert np.array_equal(check[0], samples[0].image) and np.array_equal(check[1], samples[-1].mask)
        finally:
            ray.shutdown()

    mb = 1e6
    rows = [(name, by_value[name] / mb, driver_put[name] / mb, reader[name] / mb) for name in by_value]
    rows.append(("pixels put by the driver / reader call arguments", 0.0, puts / mb, reader_sent / mb))
    totals = (sum(by_value.values()), sum(driver_put.values()) + puts, sum(reader.values()) + reader_sent)
    rows.append(("total", *(t / mb for t in totals)))
    print(f"frame {args.frame}, B={args.prompts}, G={args.group}, {args.tokens} tokens per completion")
    print_table("driver's serialised bytes per step (MB)",
                ["what", "by value", "driver puts (before)", "reader actor (now)"], rows)
    print(f"driver puts: {totals[0] / mb:.1f} MB -> {totals[1] / mb:.1f} MB, {totals[0] / totals[1]:.1f}x fewer")
    print(f"reader actor: {totals[0] / mb:.1f} MB -> {totals[2] / mb:.3f} MB, {totals[0] / totals[2]:.0f}x fewer "
          f"bytes serialised by the driver ({totals[1] / totals[2]:.0f}x fewer than with driver puts)")
    print(f"driver seconds to draw {args.prompts} prompts: load in-process {load_s:.3f} s, "
          f"reader actor {draw_s:.3f} s (calls submitted, not awaited)")


if __name__ == "__main__":
    main()
