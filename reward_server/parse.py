"""Strict parser for the Seg-R1 completion grammar, and its inverse.

Full grammar (RL stage)::

    <think>free text</think> <bbox>[x1,y1,x2,y2]</bbox>, <points>[[x,y],...]</points>, <labels>[1,0,...]</labels>

- exactly one think block, first (optional with ``require_think=False``); its text is kept verbatim;
- then one or more ``<bbox>`` tags, then one ``<points>`` tag, then one ``<labels>`` tag, in that order;
- whitespace and commas may separate the tags; spaces may surround numbers and brackets inside them;
- every number is a non-negative decimal integer; points lie in the frame (0 <= x < width, 0 <= y < height),
  and so do box corners;
- boxes must have positive extent: x1 < x2 and y1 < y2 (SAM2 reads corners as continuous coordinates, so
  x1 == x2 is a zero-area box);
- points and labels have equal length >= 1; labels are 0 (background) or 1 (foreground).

Points grammar (pre-RL stage, ``grammar="points"``): only ``<points>`` and ``<labels>``; a think block is
accepted but never required, and a ``<bbox>`` tag is an error.

The parser never evaluates model text. It is a single left-to-right scan whose regexes have one quantifier
each (no nesting), so any string is handled in linear time. Every rejection is a :class:`FormatError` whose
``code`` is one of :data:`REASONS`: a malformed completion is a zero reward with a reason, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from segr1.choices import GRAMMARS

Box = tuple[int, int, int, int]
Point = tuple[int, int]

REASONS: dict[str, str] = {
    "empty": "the completion is empty or whitespace only",
    "too_long": "the completion is longer than max_chars",
    "no_think": "no <think>...</think> block at the start",
    "no_box": "no <bbox> tag",
    "bad_box": "a box is not [x1,y1,x2,y2] with x1 < x2 and y1 < y2",
    "too_many_boxes": "more than max_boxes boxes",
    "no_points": "no <points> tag, or an empty points list",
    "bad_point": "a point is not [x,y]",
    "too_many_points": "more than max_points points",
    "no_labels": "no <labels> tag",
    "bad_label": "a label other than 0 or 1",
    "points_labels_mismatch": "points and labels differ in length",
    "bad_number": "a value that is not a non-negative decimal integer",
    "out_of_frame": "a coordinate outside the frame (x >= width or y >= height)",
    "syntax": "malformed brackets or a tag that is not closed",
    "unexpected_text": "text outside the tags, an unknown or repeated tag, or tags out of order",
}

_SEPARATORS = re.compile(r"[\s,]*")
_WHITESPACE = re.compile(r"\s*")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: \d would accept other scripts' digits
_WORD = re.compile(r"[^\s\[\],<]+")  # a run that is not a number: "1.5", "-3", "abc"
_OPEN_TAG = re.compile(r"<([a-z]{1,16})>")
_TAG_RANK = {"bbox": 0, "points": 1, "labels": 2}  # the order tags must come in
_TAG_DEPTH = {"bbox": 1, "points": 2, "labels": 1}  # list nesting each tag holds
_MAX_DIGITS = 9  # longer numbers cannot be in any frame; capping keeps int() linear
_TOO_BIG = 10**_MAX_DIGITS


class FormatError(ValueError):
    """A completion does not follow the grammar. ``code`` is a key of :data:`REASONS`."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail or REASONS[code]}")
        self.code = code


@dataclass(frozen=True)
class SegPrompt:
    """What a completion asks SAM2 for, in pixel coordinates of the frame the model saw."""

    think: str
    boxes: list[Box]  # (x1, y1, x2, y2), x1 < x2, y1 < y2
    points: list[Point]  # (x, y)
    labels: list[int]  # 1 = foreground, 0 = background; same length as points


def parse_completion(
    text: str,
    width: int,
    height: int,
    *,
    require_think: bool = True,
    max_boxes: int = 8,
    max_points: int = 32,
    max_chars: int = 8192,
    grammar: str = "full",
) -> SegPrompt:
    """Read one completion; raise :class:`FormatError` (with a reason code) if it breaks the grammar."""
    if grammar not in GRAMMARS:
        raise ValueError(f"grammar must be one of {GRAMMARS}, got {grammar!r}")
    if width <= 0 or height <= 0:
        raise ValueError(f"frame must be positive, got width={width} height={height}")
    if len(text) > max_chars:
        raise FormatError("too_long", f"{len(text)} characters > max_chars={max_chars}")
    pos = _WHITESPACE.match(text).end()
    if pos == len(text):
        raise FormatError("empty")

    think = ""
    if text.startswith("<think>", pos):
        close = text.find("</think>", pos + len("<think>"))
        if close < 0:
            raise FormatError("no_think", "<think> is never closed")
        think = text[pos + len("<think>") : close]
        pos = close + len("</think>")
    elif grammar == "full" and require_think:
        raise FormatError("no_think")

    boxes: list[Box] = []
    points: list[Point] | None = None
    labels: list[int] | None = None
    last_rank = -1
    while (pos := _SEPARATORS.match(text, pos).end()) < len(text):
        tag = _OPEN_TAG.match(text, pos)
        name = tag.group(1) if tag else None
        if name not in _TAG_RANK:
            raise FormatError("unexpected_text", f"at character {pos}: {text[pos : pos + 20]!r}")
        if grammar == "points" and name == "bbox":
            raise FormatError("unexpected_text", "<bbox> is not part of the points grammar")
        rank = _TAG_RANK[name]
        if rank < last_rank or (rank == last_rank and name != "bbox"):
            raise FormatError("unexpected_text", f"<{name}> repeated or out of order")
        last_rank = rank
        # stop reading as soon as a list is too long, so the work stays bounded by the limits
        limit = {"bbox": (4, "bad_box"), "points": (max_points, "too_many_points")}.get(
            name, (max_points, "points_labels_mismatch")
        )
        value, pos = _read_list(text, tag.end(), _TAG_DEPTH[name], *limit)
        pos = _WHITESPACE.match(text, pos).end()
        if not text.startswith(f"</{name}>", pos):
            raise FormatError("syntax", f"<{name}> is not closed by </{name}>")
        pos += len(name) + 3
        if name == "bbox":
            boxes.append(_as_box(value, width, height))
            if len(boxes) > max_boxes:
                raise FormatError("too_many_boxes", f"more than max_boxes={max_boxes}")
        elif name == "points":
            points = _as_points(value, width, height, max_points)
        else:
            labels = _as_labels(value)

    if grammar == "full" and not boxes:
        raise FormatError("no_box")
    if points is None:
        raise FormatError("no_points")
    if labels is None:
        raise FormatError("no_labels")
    if len(points) != len(labels):
        raise FormatError("points_labels_mismatch", f"{len(points)} points, {len(labels)} labels")
    return SegPrompt(think=think, boxes=boxes, points=points, labels=labels)


def render(prompt: SegPrompt) -> str:
    """Write a prompt in the grammar; ``parse_completion`` reads it back to an equal prompt.

    A prompt without boxes renders in the points grammar (with its think block, which that grammar accepts).
    """
    if "</think>" in prompt.think:
        raise ValueError("think text cannot contain '</think>': it would end the block early")
    tags = [f"<bbox>[{x1},{y1},{x2},{y2}]</bbox>" for x1, y1, x2, y2 in prompt.boxes]
    tags.append("<points>[" + ",".join(f"[{x},{y}]" for x, y in prompt.points) + "]</points>")
    tags.append("<labels>[" + ",".join(str(label) for label in prompt.labels) + "]</labels>")
    return f"<think>{prompt.think}</think> " + ", ".join(tags)


def assign_points_to_boxes(prompt: SegPrompt) -> list[tuple[Box | None, list[Point], list[int]]]:
    """Split a prompt into per-box SAM2 calls, as the paper does.

    Each box takes the points inside it (borders inclusive); a point inside two boxes goes to both, a point
    outside every box is dropped, and a box with no point inside is sent alone. A prompt without boxes
    (points grammar) gives one entry with box None and all its points.
    """
    if not prompt.boxes:
        return [(None, list(prompt.points), list(prompt.labels))]
    calls = []
    for box in prompt.boxes:
        x1, y1, x2, y2 = box
        inside = [i for i, (x, y) in enumerate(prompt.points) if x1 <= x <= x2 and y1 <= y <= y2]
        calls.append((box, [prompt.points[i] for i in inside], [prompt.labels[i] for i in inside]))
    return calls


def _read_list(text: str, pos: int, max_depth: int, max_items: int, overflow_code: str) -> tuple[list, int]:
    """Read one bracketed list of integers nested at most ``max_depth`` deep; return it and the end position.

    A three-state scan: after '[' a value or ']' may follow, after ',' a value, after a value ',' or ']'.
    More than ``max_items`` top-level items raises ``overflow_code`` at once.
    """
    pos = _WHITESPACE.match(text, pos).end()
    if not text.startswith("[", pos):
        raise FormatError("syntax", f"expected '[' at character {pos}")
    stack: list[list] = [[]]
    state = "open"
    pos += 1
    while True:
        if len(stack[0]) > max_items:
            raise FormatError(overflow_code, f"more than {max_items} items in one list")
        pos = _WHITESPACE.match(text, pos).end()
        char = text[pos] if pos < len(text) else ""
        if char and char in "0123456789[" and state == "value":
            raise FormatError("syntax", f"missing ',' before character {pos}")
        if char and char in "0123456789":
            digits = _DIGITS.match(text, pos).group()
            pos += len(digits)
            stack[-1].append(_to_int(digits))
            state = "value"
        elif char == "[":
            if len(stack) == max_depth:
                raise FormatError("syntax", f"lists nested deeper than {max_depth} at character {pos}")
            stack.append([])
            pos += 1
            state = "open"
        elif char == "," and state == "value":
            pos += 1
            state = "comma"
        elif char == "]" and state != "comma":
            pos += 1
            done = stack.pop()
            if not stack:
                return done, pos
            stack[-1].append(done)
            state = "value"
        elif char and char not in "[],<":
            word = _WORD.match(text, pos)
            raise FormatError("bad_number", f"{(word.group() if word else char)[:20]!r} at character {pos}")
        else:
            raise FormatError("syntax", f"unexpected {char or 'end of text'!r} at character {pos}")


def _to_int(digits: str) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _MAX_DIGITS else _TOO_BIG


def _check_in_frame(x: int, y: int, width: int, height: int) -> None:
    if x >= width or y >= height:
        raise FormatError("out_of_frame", f"({x}, {y}) outside the {width}x{height} frame")


def _as_box(value: list, width: int, height: int) -> Box:
    if len(value) != 4 or not all(isinstance(v, int) for v in value):
        raise FormatError("bad_box", f"expected [x1,y1,x2,y2], got {len(value)} values")
    x1, y1, x2, y2 = value
    _check_in_frame(x1, y1, width, height)
    _check_in_frame(x2, y2, width, height)
    if not (x1 < x2 and y1 < y2):
        raise FormatError("bad_box", f"[{x1},{y1},{x2},{y2}] has no area (need x1 < x2 and y1 < y2)")
    return (x1, y1, x2, y2)


def _as_points(value: list, width: int, height: int, max_points: int) -> list[Point]:
    if not value:
        raise FormatError("no_points", "the points list is empty")
    if len(value) > max_points:
        raise FormatError("too_many_points", f"{len(value)} points > max_points={max_points}")
    points = []
    for point in value:
        if not isinstance(point, list) or len(point) != 2 or not all(isinstance(v, int) for v in point):
            raise FormatError("bad_point", f"expected [x,y], got {point!r}"[:80])
        _check_in_frame(point[0], point[1], width, height)
        points.append((point[0], point[1]))
    return points


def _as_labels(value: list) -> list[int]:
    for label in value:
        if label not in (0, 1):  # the released parser accepted any integer here
            raise FormatError("bad_label", f"label {label!r} is not 0 or 1")
    return list(value)
