"""Training samples whose pixels never pass through the controller: a reader actor loads and stores them.

    data = RemoteSamples(SegDataset(path, frame_size))
    sample = data.load(i)   # ids and text from here; image and mask as ArrayRefs to Ray's object store

The controller draws prompts by index. Ids, instructions and tasks are small columns the dataset reads once;
each image and mask is decoded, resized to the frame and stored by a `PixelReader` actor. An actor call's
return values are owned by the caller (Ray's ownership model), so the controller holds ObjectRefs it can pass
on and free, while the bytes go from the reader into the object store and from there to the rollout worker,
reward actor and learner that resolve them: the controller serialises only ids and references
(bench/driver_bytes.py). The call is not awaited here, so reading overlaps the step instead of preceding it.
Ray returns values under 100 KB (its max_direct_call_object_size) inline to the caller instead of through the
object store, so at small frames (the embedded default's 112 px) the pixels still pass through the controller;
an image reaches 100 KB at about 185 px and a mask at about 320 px, so at the paper's 768 px neither does.
"""

from __future__ import annotations

import itertools

import numpy as np
import ray

from segr1.data.dataset import SegDataset
from segr1.protocol import ArrayRef, Sample


class PixelReader:
    """One SegDataset (with its row-group cache) in a process of its own."""

    def __init__(self, path: str, frame_size: int) -> None:
        self._data = SegDataset(path, frame_size)

    def pixels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8[F, F, 3], mask bool[F, F]) of row `index` in the training frame."""
        sample = self._data.load(index)
        return sample.image, sample.mask


class RemoteSamples:
    """The training set as the controller draws it (`len`, `load(i)`), pixels loaded by `readers` actors."""

    def __init__(self, dataset: SegDataset, readers: int = 1) -> None:
        self.dataset = dataset
        # No CPU reserved (decoding a frame is milliseconds, and the pools hold the cores); reads are
        # idempotent, so a reader that dies is restarted and its calls retried.
        actor = ray.remote(PixelReader).options(num_cpus=0, max_restarts=-1, max_task_retries=-1)
        self._readers = [actor.remote(dataset.path, dataset.frame_size) for _ in range(readers)]
        self._turn = itertools.count()

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Sample:
        frame = self.dataset.frame_size
        reader = self._readers[next(self._turn) % len(self._readers)]
        image, mask = reader.pixels.options(num_returns=2).remote(index)
        return Sample(sample_id=self.dataset.sample_id(index), image=ArrayRef(image, (frame, frame, 3), "uint8"),
                      mask=ArrayRef(mask, (frame, frame), "bool"), instruction=self.dataset.instruction(index),
                      task=self.dataset.task(index))
