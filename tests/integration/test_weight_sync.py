"""Weight broadcast from a DeepSpeed learner (LearnerGroup, a Ray actor) to two real RolloutWorker Ray actors
(HF engine, tiny VLM).

- object store: one put per bucket, both workers end up with bit-identical weights, and afterwards the engine's
  sampling log-probs equal the learner's teacher-forced log-probs (before the sync they do not: it trained);
- collective transport: the same through cluster.weight_sync.connect/broadcast over a gloo group (the code path
  NCCL takes on GPUs) is bit-identical too.
"""

from __future__ import annotations

import pytest
import torch
from learner_helpers import learner_config, make_items, max_abs_diff, with_logprobs

from segr1.protocol import GenerationRequest, SamplingParams, TrainItem
from segr1.weights import TensorBucket, WeightBucket

pytestmark = [pytest.mark.ray, pytest.mark.slow]

OVERRIDES = ("learner.lr=1e-2", "learner.sync.bucket_mb=1", "rollout.num_cpus=1", "learner.num_cpus=1")


def engine_weights(worker) -> dict[str, torch.Tensor]:
    import ray

    return ray.get(worker.__ray_call__.remote(
        lambda self: {k: v.detach().clone() for k, v in self.engine.model.state_dict().items()}))


def served_from_store(worker, refs) -> int:
    """How many of the broadcast's tensors the worker's engine parameters point into (in the worker)."""
    import ray

    def count(self, refs) -> int:  # nested: Ray ships it by value (the test module is not importable there)
        from segr1.weights import unpack_buckets

        addresses = {name: t.data_ptr() for name, t in unpack_buckets(ray.get(refs))}  # the same shared memory
        params = dict(self.engine.model.named_parameters(remove_duplicate=False))
        return sum(params[name].data_ptr() == address for name, address in addresses.items())

    return ray.get(worker.__ray_call__.remote(count, refs))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import ray
    from transformers import AutoProcessor

    from learner.group import LearnerGroup
    from rollout.tiny_model import ensure_tiny_vlm
    from rollout.worker import RolloutWorker

    model_path = ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"))
    cfg = learner_config(*OVERRIDES)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    Worker = ray.remote(RolloutWorker).options(num_cpus=1)
    workers = [Worker.remote(cfg, model_path, f"rollout-{i}") for i in range(2)]
    learner = LearnerGroup(cfg, model_path)
    processor = AutoProcessor.from_pretrained(model_path)
    items = make_items(processor, num_groups=2)
    learner.train_step(with_logprobs(items, learner.logprobs(items)))  # weights now differ from the disk copy
    yield learner, workers, processor
    ray.shutdown()


def sample_and_score(learner, worker, processor) -> tuple[list[float], list[float]]:
    """Completions sampled by the worker, with its log-probs and the learner's teacher-forced ones."""
    import ray

    image = make_items(processor, 1, seed=5)[0].image
    request = GenerationRequest("r0", image, "Segment the object.")
    (group,) = ray.get(worker.generate.remote([request], SamplingParams(n=3, max_new_tokens=12, seed=0)))
    completions = group.completions
    item = TrainItem("r0", image, group.prompt_ids, [c.token_ids for c in completions], [0.0] * len(completions),
                     [c.logprobs for c in completions])
    learner_lp = [x for seq in learner.logprobs([item])[0] for x in seq]
    return [x for c in completions for x in c.logprobs], learner_lp


def test_object_store_broadcast_is_bit_identical_and_logprobs_match(setup):
    import ray

    learner, workers, processor = setup
    engine_lp, learner_lp = sample_and_score(learner, workers[0], processor)
    assert max(abs(a - b) for a, b in zip(engine_lp, learner_lp)) > 1e-3  # stale weights: they disagree

    version, refs = learner.publish_weights()
    assert version == 1 and len(refs) > 1  # 1 MB buckets: the tiny model spans several
    # ZeRO-1 keeps the parameters in one flat buffer: they ship as byte ranges of it, not packed copies
    fetched = ray.get(refs)
    loose = [n for b in fetched if isinstance(b, TensorBucket) for n in b.names]
    assert any(isinstance(b, WeightBucket) for b in fetched)
    # 1.00 MB (the vision merger's 512x512 input layer) and 0.89 MB: no 1 MB bucket has room for a neighbour of
    # either, so each ships alone; every other parameter shares a byte range of the ZeRO flat buffer
    assert loose == ["model.visual.merger.mlp.0.weight", "lm_head.weight"]
    assert ray.get([w.update_weights.remote(refs, version) for w in workers]) == [version, version]
    sent = learner.full_state_dict()
    for worker in workers:
        assert max_abs_diff(engine_weights(worker), sent) == 0.0
        # rollout.zero_copy_weights: each worker's parameters are the object store's buffers, not copies
        assert served_from_store(worker, refs) == len(sent)

    engine_lp, learner_lp = sample_and_score(learner, workers[1], processor)
    assert engine_lp == pytest.approx(learner_lp, abs=1e-4)


def test_collective_broadcast_over_gloo_is_bit_identical(setup):
    import ray

    from cluster import weight_sync

    learner, workers, processor = setup
    items = make_items(processor, 2, seed=9)
    learner.train_step(with_logprobs(items, learner.logprobs(items)))  # new weights the workers have not seen
    weight_sync.connect(learner, workers, backend="gloo")
    version = weight_sync.broadcast(learner, workers)
    assert version == learner.weights_version() == 2
    assert ray.get([w.weights_version.remote() for w in workers]) == [version, version]
    sent = learner.full_state_dict()
    for worker in workers:
        assert max_abs_diff(engine_weights(worker), sent) == 0.0
