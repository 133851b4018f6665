"""Tests of the strict Seg-R1 grammar parser: accepted forms, every reason code, round trips, hostile text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward_server import parse
from reward_server.parse import (
    REASONS,
    FormatError,
    SegPrompt,
    assign_points_to_boxes,
    parse_completion,
    render,
)

THINK = "<think>a green frog on a leaf</think>"
TAIL = "<points>[[20,30],[5,5]]</points>, <labels>[1,0]</labels>"


def test_reads_the_paper_format_exactly():
    text = f"{THINK} <bbox>[10,20,60,70]</bbox>, {TAIL}"
    assert parse_completion(text, 100, 80) == SegPrompt(
        think="a green frog on a leaf", boxes=[(10, 20, 60, 70)], points=[(20, 30), (5, 5)], labels=[1, 0]
    )


def test_tolerates_whitespace_and_separators_and_keeps_think_verbatim():
    text = "\n <think>\n two  lines\n</think>\n\n<bbox> [ 10 , 20,60 ,70 ] </bbox>,,"
    text += "<bbox>[0,0,99,79]</bbox>\n<points>[ [20 ,30] , [5,5] ]</points> , <labels>[ 1 ,0 ]</labels>\n"
    prompt = parse_completion(text, 100, 80)
    assert prompt.think == "\n two  lines\n"
    assert prompt.boxes == [(10, 20, 60, 70), (0, 0, 99, 79)]
    assert prompt.points == [(20, 30), (5, 5)] and prompt.labels == [1, 0]


def test_frame_edges_are_inclusive_of_the_last_pixel_only():
    assert parse_completion(f"{THINK}<bbox>[0,0,99,79]</bbox>{TAIL}", 100, 80).boxes == [(0, 0, 99, 79)]
    assert _code(f"{THINK}<bbox>[0,0,100,79]</bbox>{TAIL}", 100, 80) == "out_of_frame"
    assert _code(f"{THINK}<bbox>[0,0,99,80]</bbox>{TAIL}", 100, 80) == "out_of_frame"
    point_outside = f"{THINK}<bbox>[0,0,9,9]</bbox><points>[[100,1]]</points><labels>[1]</labels>"
    assert _code(point_outside, 100, 80) == "out_of_frame"


def test_leading_zeros_and_huge_numbers():
    assert parse_completion(f"{THINK}<bbox>[007,0,10,10]</bbox>{TAIL}", 100, 80).boxes == [(7, 0, 10, 10)]
    assert _code(f"{THINK}<bbox>[0,0,{'9' * 5000},10]</bbox>{TAIL}", 100, 80) == "out_of_frame"
    long_zero_run = parse_completion(f"{THINK}<bbox>[0,0,{'0' * 5000}1,10]</bbox>{TAIL}", 100, 80)
    assert long_zero_run.boxes == [(0, 0, 1, 10)]


@pytest.mark.parametrize(
    "text, code",
    [
        ("", "empty"),
        (" \n\t ", "empty"),
        ("<bbox>[1,1,5,5]</bbox>" + TAIL, "no_think"),
        ("<think>never closed <bbox>[1,1,5,5]</bbox>" + TAIL, "no_think"),
        ("I think <think>x</think><bbox>[1,1,5,5]</bbox>" + TAIL, "no_think"),
        (THINK + TAIL, "no_box"),
        (THINK + "<bbox>[1,1,5]</bbox>" + TAIL, "bad_box"),
        (THINK + "<bbox>[5,1,5,9]</bbox>" + TAIL, "bad_box"),  # zero width
        (THINK + "<bbox>[1,9,5,9]</bbox>" + TAIL, "bad_box"),  # zero height
        (THINK + "<bbox>[6,1,5,9]</bbox>" + TAIL, "bad_box"),  # reversed corners
        (THINK + "<bbox>[1,1,5,5]</bbox>", "no_points"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[]</points><labels>[]</labels>", "no_points"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2,3]]</points><labels>[1]</labels>", "bad_point"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[1,2]</points><labels>[1]</labels>", "bad_point"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points>", "no_labels"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points><labels>[2]</labels>", "bad_label"),
        (
            THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points><labels>[1,0]</labels>",
            "points_labels_mismatch",
        ),
        (
            THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2],[3,4]]</points><labels>[]</labels>",
            "points_labels_mismatch",
        ),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2.5]]</points><labels>[1]</labels>", "bad_number"),
        (THINK + "<bbox>[-1,1,5,5]</bbox>" + TAIL, "bad_number"),
        (THINK + "<bbox>[1,1,5,x]</bbox>" + TAIL, "bad_number"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points><labels>[1.0]</labels>", "bad_number"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points><labels>[one]</labels>", "bad_number"),
        (THINK + "<bbox>[1 1,5,5]</bbox>" + TAIL, "syntax"),  # missing comma
        (THINK + "<bbox>[1,1,5,5,]</bbox>" + TAIL, "syntax"),  # trailing comma
        (THINK + "<bbox>[1,,1,5,5]</bbox>" + TAIL, "syntax"),
        (THINK + "<bbox>[[1,1,5,5]]</bbox>" + TAIL, "syntax"),  # too deep
        (THINK + "<bbox>[1,1,5,5]" + TAIL, "syntax"),  # not closed
        (THINK + "<bbox>[1,1,5,5</bbox>" + TAIL, "syntax"),
        (THINK + "<bbox>1,1,5,5</bbox>" + TAIL, "syntax"),
        (THINK + "<bbox>[1,1,5,5]</bbox><points>[[1,2]]</points><labels>[1]", "syntax"),
        (THINK + "<bbox>[1,1,5,5]</bbox>" + TAIL + " thanks!", "unexpected_text"),
        (THINK + "Answer: <bbox>[1,1,5,5]</bbox>" + TAIL, "unexpected_text"),
        (THINK + "<box>[1,1,5,5]</box>" + TAIL, "unexpected_text"),
        (THINK + THINK + "<bbox>[1,1,5,5]</bbox>" + TAIL, "unexpected_text"),
        (THINK + TAIL + "<bbox>[1,1,5,5]</bbox>", "unexpected_text"),  # out of order
        (THINK + "<bbox>[1,1,5,5]</bbox>" + TAIL + "<labels>[1,0]</labels>", "unexpected_text"),  # repeated
        (THINK + "<bbox>[1,1,5,5]</bbox>" + "<BBOX>[1,1,5,5]</BBOX>" + TAIL, "unexpected_text"),
    ],
)
def test_each_failure_has_its_reason_code(text, code):
    assert _code(text, 100, 80) == code


def test_limits_on_length_boxes_and_points():
    assert _code(f"{THINK}<bbox>[1,1,5,5]</bbox>{TAIL}", 100, 80, max_chars=20) == "too_long"
    three_boxes = f"{THINK}" + "<bbox>[1,1,5,5]</bbox>" * 3 + TAIL
    assert len(parse_completion(three_boxes, 100, 80, max_boxes=3).boxes) == 3
    assert _code(three_boxes, 100, 80, max_boxes=2) == "too_many_boxes"
    points = ",".join(["[1,1]"] * 4)
    four = f"{THINK}<bbox>[0,0,5,5]</bbox><points>[{points}]</points><labels>[1,1,1,1]</labels>"
    assert len(parse_completion(four, 100, 80, max_points=4).points) == 4
    assert _code(four, 100, 80, max_points=3) == "too_many_points"


def test_think_is_optional_when_not_required():
    prompt = parse_completion(f"<bbox>[1,1,5,5]</bbox>{TAIL}", 100, 80, require_think=False)
    assert prompt.think == "" and prompt.boxes == [(1, 1, 5, 5)]


def test_points_grammar_needs_no_think_and_no_box_but_refuses_boxes():
    assert parse_completion(TAIL, 100, 80, grammar="points") == SegPrompt("", [], [(20, 30), (5, 5)], [1, 0])
    assert parse_completion(THINK + TAIL, 100, 80, grammar="points").think == "a green frog on a leaf"
    assert _code(f"{THINK}<bbox>[1,1,5,5]</bbox>{TAIL}", 100, 80, grammar="points") == "unexpected_text"
    assert _code("<labels>[1]</labels>", 100, 80, grammar="points") == "no_points"


def test_programming_errors_are_not_format_errors():
    with pytest.raises(ValueError, match="grammar"):
        parse_completion(TAIL, 100, 80, grammar="boxes")
    with pytest.raises(ValueError, match="frame"):
        parse_completion(TAIL, 0, 80)
    with pytest.raises(ValueError, match="</think>"):
        render(SegPrompt("a</think>b", [(1, 1, 5, 5)], [(1, 1)], [1]))


def test_every_reason_code_is_documented_and_reachable():
    required = "no_think no_box bad_box points_labels_mismatch bad_label out_of_frame too_many_points"
    required += " too_many_boxes too_long no_points bad_number empty"
    assert set(REASONS) >= set(required.split())
    assert FormatError("bad_box").code == "bad_box" and isinstance(FormatError("empty"), ValueError)


def test_points_go_to_every_box_that_contains_them_borders_included():
    prompt = SegPrompt(
        think="",
        boxes=[(0, 0, 10, 10), (10, 10, 20, 20), (50, 50, 60, 60)],
        points=[(10, 10), (5, 5), (15, 12), (90, 90)],
        labels=[1, 0, 1, 1],
    )
    assert assign_points_to_boxes(prompt) == [
        ((0, 0, 10, 10), [(10, 10), (5, 5)], [1, 0]),
        ((10, 10, 20, 20), [(10, 10), (15, 12)], [1, 1]),
        ((50, 50, 60, 60), [], []),  # box-only prompt; (90, 90) is in no box and dropped
    ]
    points_only = SegPrompt("", [], [(1, 2)], [0])
    assert assign_points_to_boxes(points_only) == [(None, [(1, 2)], [0])]


# ------------------------------------------------------------------------------------------- properties
FRAME_W, FRAME_H = 120, 90


@st.composite
def prompts(draw) -> SegPrompt:
    think = draw(st.text(max_size=40).filter(lambda t: "</think>" not in t))
    boxes = []
    for _ in range(draw(st.integers(1, 4))):
        x1, x2 = sorted(draw(st.lists(st.integers(0, FRAME_W - 1), min_size=2, max_size=2, unique=True)))
        y1, y2 = sorted(draw(st.lists(st.integers(0, FRAME_H - 1), min_size=2, max_size=2, unique=True)))
        boxes.append((x1, y1, x2, y2))
    n = draw(st.integers(1, 8))
    points = [(draw(st.integers(0, FRAME_W - 1)), draw(st.integers(0, FRAME_H - 1))) for _ in range(n)]
    labels = [draw(st.integers(0, 1)) for _ in range(n)]
    return SegPrompt(think=think, boxes=boxes, points=points, labels=labels)


@settings(max_examples=200, deadline=None)
@given(prompts())
def test_render_then_parse_is_the_identity(prompt):
    assert parse_completion(render(prompt), FRAME_W, FRAME_H) == prompt


@settings(max_examples=200, deadline=None)
@given(prompts())
def test_points_grammar_round_trip(prompt):
    points_only = SegPrompt(prompt.think, [], prompt.points, prompt.labels)
    assert parse_completion(render(points_only), FRAME_W, FRAME_H, grammar="points") == points_only


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_returns_or_raises_format_error(text):
    _returns_or_format_error(text)


TAGS = ["<think>", "</think>", "<bbox>", "</bbox>", "<points>", "</points>", "<labels>", "</labels>"]
GRAMMAR_PIECES = list("<>/[],0123456789 \n-.") + TAGS + ["[[", "]]"]
EDITS = st.lists(  # (position, action, piece) applied one after the other
    st.tuples(
        st.integers(0, 10**6),
        st.sampled_from(["insert", "delete", "replace"]),
        st.sampled_from(GRAMMAR_PIECES),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(prompts(), EDITS)
def test_near_miss_mutations_return_or_raise_format_error(prompt, edits):
    text = render(prompt)
    for where, action, piece in edits:
        i = where % (len(text) + 1)
        if action == "insert":
            text = text[:i] + piece + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + len(piece) :]
        else:
            text = text[:i] + piece + text[i + len(piece) :]
    _returns_or_format_error(text)


# ------------------------------------------------------------------------------------- hostile inputs
N = 100_000
OPEN = f"{THINK}<bbox>"
HOSTILE = {
    "think_openers": "<think>" * (N // 7),
    "closed_think_then_brackets": OPEN + "[" + "[[" * (N // 2),
    "digits": OPEN + "[" + "7" * N,
    "digit_words": OPEN + "[" + "1a" * (N // 2),
    "commas": OPEN + "[1" + ", " * (N // 2),
    "separators": THINK + ", \n" * (N // 3),
    "many_boxes": THINK + "<bbox>[1,1,5,5]</bbox>" * (N // 22),
    "many_points": f"{THINK}<bbox>[0,0,9,9]</bbox><points>[" + "[1,1]," * (N // 6) + "[1,1]]</points>",
    "open_angles": THINK + "<" * N,
    "long_think": "<think>" + "x" * N + "</think>" + "<bbox>[1,1,5,5]</bbox>" + TAIL,
}


@pytest.fixture
def regex_work(monkeypatch) -> dict[str, int]:
    """Counts every match of the scanner's regexes: calls, and characters they consume."""
    work = {"calls": 0, "chars": 0}

    class Counted:
        def __init__(self, pattern):
            self.pattern = pattern

        def match(self, string, pos=0):
            found = self.pattern.match(string, pos)
            work["calls"] += 1
            work["chars"] += found.end() - pos if found else 0
            return found

    for name in ("_SEPARATORS", "_WHITESPACE", "_DIGITS", "_WORD", "_OPEN_TAG"):
        monkeypatch.setattr(parse, name, Counted(getattr(parse, name)))
    return work


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_takes_linear_work(name, regex_work):
    """With every limit lifted the scan reads the whole text, and its work stays proportional to it."""
    text = HOSTILE[name]
    _returns_or_format_error(text, max_chars=10 * N, max_points=10 * N, max_boxes=10 * N)
    assert regex_work["calls"] <= 2 * len(text) + 10
    assert regex_work["chars"] <= 2 * len(text) + 10


@pytest.mark.parametrize("name, code", [("many_boxes", "too_many_boxes"), ("many_points", "too_many_points")])
def test_box_and_point_limits_stop_the_scan_early(name, code, regex_work):
    assert _code(HOSTILE[name], FRAME_W, FRAME_H, max_chars=10 * N) == code
    assert regex_work["calls"] < 1000  # a few tokens per box or point, up to the default limits
    assert _code(HOSTILE[name], FRAME_W, FRAME_H) == "too_long"  # and the default length limit first


def test_a_long_think_block_is_fine():
    assert parse_completion(HOSTILE["long_think"], 100, 80, max_chars=10 * N).think == "x" * N


def _code(text: str, width: int, height: int, **options) -> str:
    with pytest.raises(FormatError) as caught:
        parse_completion(text, width, height, **options)
    assert caught.value.code in REASONS
    return caught.value.code


def _returns_or_format_error(text: str, **options) -> None:
    try:
        prompt = parse_completion(text, FRAME_W, FRAME_H, **options)
    except FormatError as error:
        assert error.code in REASONS
    else:
        assert isinstance(prompt, SegPrompt) and len(prompt.points) == len(prompt.labels) >= 1
