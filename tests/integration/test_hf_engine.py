"""HFEngine on the real tiny Qwen2.5-VL: log-probs against a teacher-forced forward pass, groups, EOS, batching
with images of different sizes, seeds, greedy decoding and in-place weight updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rollout.hf_engine import HFEngine, trim_at_stop
from rollout.tiny_model import ensure_tiny_vlm
from segr1.chat import FOREGROUND_INSTRUCTION, mm_token_type_ids
from segr1.protocol import GenerationRequest, SamplingParams

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return ensure_tiny_vlm(str(tmp_path_factory.mktemp("tiny") / "vlm"))


@pytest.fixture(scope="module")
def engine(model_path) -> HFEngine:
    return HFEngine(model_path, dtype="float32")


def _request(i: int, frame: int = 112) -> GenerationRequest:
    image = np.random.default_rng(i).integers(0, 256, (frame, frame, 3), dtype=np.uint8)
    return GenerationRequest(f"req-{i}", image, FOREGROUND_INSTRUCTION if i % 2 == 0 else "Segment the bird.")


def teacher_forced_logprobs(
    engine: HFEngine, request: GenerationRequest, tokens: list[int], temperature: float = 1.0, top_p: float = 1.0
) -> torch.Tensor:
    """Log-probs [L] of `tokens` after the prompt, from one full forward pass, with the engine's token mask,
    temperature and top-p applied by hand."""
    prompt_ids, vision = engine.encode(request)
    ids = torch.tensor([prompt_ids + tokens])  # [1, P+L]
    with torch.no_grad():
        logits = engine.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm_token_type_ids(
                ids, engine.image_token_id), **vision,
        ).logits[0].float()  # [P+L, V]
    step = logits[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(tokens)]  # [L, V]: position t predicts token t+1
    step[:, engine.masked_ids] = float("-inf")
    step = step / temperature
    if top_p < 1.0:  # keep the most likely tokens whose preceding mass is below top_p
        probs, order = torch.softmax(step, -1).sort(dim=-1, descending=True)
        mass_above = probs.cumsum(-1) - probs
        drop = torch.zeros_like(step, dtype=torch.bool).scatter(1, order, mass_above >= top_p)
        step = step.masked_fill(drop, float("-inf"))
    return torch.log_softmax(step, -1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampled_logprobs_equal_teacher_forced_forward(engine, temperature, top_p):
    requests = [_request(0), _request(1, frame=224)]
    sampling = SamplingParams(n=3, temperature=temperature, top_p=top_p, max_new_tokens=24, seed=1)
    groups = engine.generate(requests, sampling)
    for request, group in zip(requests, groups):
        for completion in group.completions:
            expected = teacher_forced_logprobs(engine, request, completion.token_ids, temperature, top_p)
            got = torch.tensor(completion.logprobs)
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_n_completions_per_prompt_in_request_order(engine):
    requests = [_request(i) for i in range(3)]
    groups = engine.generate(requests, SamplingParams(n=4, max_new_tokens=12, seed=0))
    assert [g.request_id for g in groups] == ["req-0", "req-1", "req-2"]
    for request, group in zip(requests, groups):
        assert group.prompt_ids == engine.encode(request)[0]
        assert group.weights_version == engine.weights_version == 0
        assert len(group.completions) == 4
        assert len({tuple(c.token_ids) for c in group.completions}) > 1  # sampled, not copies
        for c in group.completions:
            assert len(c.token_ids) == len(c.logprobs) == 12 or c.finish_reason == "stop"


def test_trim_at_stop_keeps_the_stop_token_and_drops_padding():
    assert trim_at_stop([5, 9, 2, 0, 0], [-1.0, -2.0, -3.0, -9.0, -9.0], {0, 2}) == ([5, 9, 2], [-1.0, -2.0, -3.0],
                                                                                  "stop")
    assert trim_at_stop([5, 9], [-1.0, -2.0], {0, 2}) == ([5, 9], [-1.0, -2.0], "length")


def test_generation_stops_at_eos_and_returns_nothing_after_it(engine):
    sampling = SamplingParams(n=32, max_new_tokens=48, seed=3)
    completions = [c for g in engine.generate([_request(0), _request(1)], sampling) for c in g.completions]
    stops = set(engine.stop_ids)
    reasons = {c.finish_reason for c in completions}
    assert reasons == {"stop", "length"}  # some rows stopped early while others ran on (padding was trimmed)
    for c in completions:
        assert len(c.logprobs) == len(c.token_ids)
        assert not stops & set(c.token_ids[:-1])
        if c.finish_reason == "stop":
            assert c.token_ids[-1] in stops and len(c.token_ids) <= 48
        else:
            assert len(c.token_ids) == 48 and c.token_ids[-1] not in stops
        assert "<|im_end|>" not in c.text and "<|endoftext|>" not in c.text


def test_batch_with_different_images_matches_each_request_alone(engine):
    requests = [_request(0), _request(1, frame=224), _request(2), _request(3, frame=168)]  # unequal prompt lengths
    batched = engine.generate(requests, GREEDY)
    for request, group in zip(requests, batched):
        alone = engine.generate([request], GREEDY)[0]
        assert group.completions[0].token_ids == alone.completions[0].token_ids
        np.testing.assert_allclose(group.completions[0].logprobs, alone.completions[0].logprobs, atol=1e-4)


def test_greedy_picks_the_argmax_and_ignores_the_seed(engine):
    request = _request(0)
    first = engine.generate([request], SamplingParams(n=2, temperature=0.0, max_new_tokens=16, seed=0))[0]
    second = engine.generate([request], SamplingParams(n=1, temperature=0.0, max_new_tokens=16, seed=99))[0]
    tokens = first.completions[0].token_ids
    assert first.completions[1].token_ids == tokens == second.completions[0].token_ids
    expected = teacher_forced_logprobs(engine, request, tokens)
    torch.testing.assert_close(torch.tensor(first.completions[0].logprobs), expected, atol=1e-4, rtol=0)
    # each greedy token is the most likely one: its log-prob is the row maximum of the (masked) distribution
    prompt_ids, vision = engine.encode(request)
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logits = engine.model(input_ids=ids, mm_token_type_ids=mm_token_type_ids(ids, engine.image_token_id),
                              **vision).logits[0, len(prompt_ids) - 1: -1]
    logits[:, engine.masked_ids] = float("-inf")
    assert logits.argmax(-1).tolist() == tokens


def test_same_seed_same_samples_other_seed_other_samples(engine):
    requests = [_request(0), _request(1)]

    def tokens(seed: int) -> list[list[int]]:
        groups = engine.generate(requests, SamplingParams(n=2, max_new_tokens=12, seed=seed))
        return [c.token_ids for g in groups for c in g.completions]

    assert tokens(5) == tokens(5)
    assert tokens(5) != tokens(6)


def _perturbed(engine: HFEngine, seed: int) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    state = engine.model.state_dict()
    names = ["lm_head.weight", "model.language_model.layers.1.mlp.down_proj.weight"]
    return [(name, state[name] + 0.5 * torch.randn(state[name].shape, generator=gen)) for name in names]


def test_weight_update_changes_greedy_output_deterministically(model_path):
    first, second = HFEngine(model_path, dtype="float32"), HFEngine(model_path, dtype="float32")
    request = _request(0)
    before = first.generate([request], GREEDY)[0].completions[0].token_ids
    update = _perturbed(first, seed=0)
    first.update_weights(iter(update), version=1)
    second.update_weights([(n, t.to(torch.bfloat16).float()) for n, t in update], version=1)  # same values
    after = first.generate([request], GREEDY)[0]
    assert first.weights_version == 1 and after.weights_version == 1
    assert after.completions[0].token_ids != before
    # Bitwise-equal weights on both engines -> identical greedy output. (bf16 round trip on both sides.)
    first.update_weights([(n, t.to(torch.bfloat16)) for n, t in update], version=2)
    assert first.generate([request], GREEDY)[0].completions[0].token_ids == \
        second.generate([request], GREEDY)[0].completions[0].token_ids


def test_weight_update_rejects_unknown_names_and_wrong_shapes_without_touching_the_model(engine):
    before = engine.model.state_dict()["lm_head.weight"].clone()
    good = ("lm_head.weight", torch.zeros_like(before))
    with pytest.raises(ValueError, match="model.no_such.weight"):
        engine.update_weights([good, ("model.no_such.weight", torch.zeros(2))], version=5)
    with pytest.raises(ValueError, match=r"lm_head.weight: got \(3, 3\)"):
        engine.update_weights([("lm_head.weight", torch.zeros(3, 3))], version=5)
    assert torch.equal(engine.model.state_dict()["lm_head.weight"], before)
    assert engine.weights_version == 0


def test_immutable_update_serves_from_the_given_buffers_and_never_writes_them(model_path):
    """Object-store path: same outputs as copying, the model reads the broadcast's own memory (no copy), and a
    later copying update replaces borrowed storage instead of writing into the shared, read-only buffers."""
    borrowing, copying = HFEngine(model_path, dtype="float32"), HFEngine(model_path, dtype="float32")
    update = _perturbed(borrowing, seed=1)
    frozen = [(n, t.clone()) for n, t in update]
    borrowing.update_weights(iter(update), version=1, immutable=True)
    copying.update_weights(iter(update), version=1)
    params = dict(borrowing.model.named_parameters(remove_duplicate=False))
    assert all(params[n].data_ptr() == t.data_ptr() for n, t in update)  # served in place: nothing copied
    copied = dict(copying.model.named_parameters(remove_duplicate=False))
    assert all(copied[n].data_ptr() != t.data_ptr() for n, t in update)
    request = _request(3)
    sampled = SamplingParams(n=2, max_new_tokens=10, seed=4)
    a, b = borrowing.generate([request], sampled)[0], copying.generate([request], sampled)[0]
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert [c.logprobs for c in a.completions] == [c.logprobs for c in b.completions]

    # A bf16 tensor cannot be served by a float32 model: it is converted (copied) instead.
    name, tensor = update[0]
    borrowing.update_weights([(name, tensor.to(torch.bfloat16))], version=2, immutable=True)
    assert params[name].data_ptr() != tensor.data_ptr() and params[name].dtype == torch.float32
    # A copying update of a borrowed weight leaves the borrowed buffer untouched.
    name, tensor = update[1]
    borrowing.update_weights([(name, torch.zeros_like(tensor))], version=3)
    assert torch.equal(tensor, dict(frozen)[name]) and not params[name].any()
