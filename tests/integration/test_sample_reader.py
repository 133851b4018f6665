"""cluster.sample_reader on a local Ray: samples drawn by index carry ObjectRefs that a reader actor filled,
equal to what SegDataset loads in-process, and the controller's process never puts pixels itself."""

from __future__ import annotations

import numpy as np
import pytest

from cluster import records
from cluster.sample_reader import RemoteSamples
from segr1.data.dataset import SegDataset
from segr1.data.synth import synthesize
from segr1.protocol import ArrayRef, resolve_arrays

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray]


def test_pixels_come_from_the_reader_by_reference(tmp_path, monkeypatch):
    path = synthesize(tmp_path / "train.parquet", n=3, seed=5, size=48)
    local = SegDataset(path, frame_size=32)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        data = RemoteSamples(local)

        def no_put(*args, **kwargs):
            raise AssertionError("the driver put pixels into the object store")

        monkeypatch.setattr(ray, "put", no_put)
        samples = records.by_reference([data.load(i) for i in (2, 0)])  # references are kept, nothing put
        monkeypatch.undo()
        assert len(data) == 3
        for sample, index in zip(samples, (2, 0)):
            expected = local.load(index)
            assert (sample.sample_id, sample.instruction, sample.task) == \
                (expected.sample_id, expected.instruction, expected.task)
            assert isinstance(sample.image, ArrayRef) and isinstance(sample.image.value, ray.ObjectRef)
            image, mask = resolve_arrays([sample.image, sample.mask])
            assert image.shape == (32, 32, 3) and mask.dtype == np.bool_ and mask.any()
            assert np.array_equal(image, expected.image) and np.array_equal(mask, expected.mask)
    finally:
        ray.shutdown()
