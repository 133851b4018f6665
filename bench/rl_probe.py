"""Research probe: does GRPO teach the embedded tiny VLM to localise? One process, no Ray, ~2.5 s per step.

The product runs the same algorithm through its actors (`make train`, `make train-long`); this probe strips
the distribution away to try recipes fast (docs/LEARNING.md holds what was tried and measured). It uses the
project's own pieces: the tiny VLM, synthetic scenes, warm-start targets (`cluster.warm_start.random_prompt`),
the parser, the GrabCut segmenter, the paper's reward terms, `learner.grpo.group_advantages` and the learner's
log-prob path. The update is on-policy with one optimizer step per batch, so the GRPO ratio is 1 and the loss
is -A * mean-token log-prob (+ beta * k3 KL to the warm-started policy).

Each evaluation prints, on 64 held-out scenes: greedy IoU, greedy IoU with every prompt scored on the next
scene (`shuffled`: a policy that ignores the image scores the same), and the same two for 4 samples per scene.

    .venv/bin/python bench/rl_probe.py --steps 300 --scale none --train-n 8192
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAME, SYSTEM = 112, "{frame}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-start-steps", type=int, default=500)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--scale", default="none", choices=("std", "none"))
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--entropy-coef", type=float, default=0.0, help="- c * mean token entropy in the loss")
    p.add_argument("--coord-entropy", type=float, default=0.0,
                   help="- c * mean exact entropy at the positions that write a number (coordinates only)")
    p.add_argument("--coord-kl", type=float, default=0.0,
                   help="+ c * exact KL(policy || warm-started policy) at the positions that write a number")
    p.add_argument("--box-weight", type=float, default=0.0, help="+ w * GIoU(predicted box, GT box) in the reward")
    p.add_argument("--box-contrast", type=float, default=0.0,
                   help="- c * w * mean GIoU(predicted box, GT boxes of 256 training scenes): the box's gain over blind")
    p.add_argument("--train-n", type=int, default=8192)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--gt-steps", type=int, default=0, help="diagnostic: supervise on GT boxes instead of GRPO")
    p.add_argument("--object-steps", type=int, default=0,
                   help="diagnostic: after the warm start, supervise on the box of a random object of each scene "
                        "(target or distractor): the model learns to box objects, not which one is the target")
    p.add_argument("--coord-credit", type=float, default=0.0,
                   help="+ c * per-token advantage at the 4 box coordinates: -|coordinate - GT| / frame, centred "
                        "in the group (each coordinate's own credit, not the whole box's)")
    p.add_argument("--coord-contrast", action="store_true",
                   help="per-coordinate credit pays only the gain over the same coordinate's mean error against 256 "
                        "training GT boxes: a coordinate good for every scene earns nothing, so no constant attractor")
    p.add_argument("--sequence-weight", type=float, default=1.0,
                   help="scale of the whole-completion (paper reward) advantages; 0 with --coord-credit leaves only "
                        "the per-coordinate signal")
    p.add_argument("--grid", type=int, default=1,
                   help="warm-start coordinates snapped to multiples of this many pixels: fewer values per coordinate "
                        "for GRPO to explore (still image-independent)")
    p.add_argument("--gradient-snr", type=int, default=0,
                   help="diagnostic: after the warm start, measure this many batches' gradients (no step) along the "
                        "image-reading direction, for supervision on GT boxes and for GRPO, and stop")
    p.add_argument("--snr-scenes", type=int, default=4096,
                   help="training scenes that define the image-reading direction for --gradient-snr (the batches "
                        "measured along it are drawn from the rest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    Probe(args).run()


def snap(prompt, grid: int):
    """The prompt with every coordinate rounded to a multiple of `grid` px (1: unchanged)."""
    if grid <= 1:
        return prompt
    from dataclasses import replace

    def r(v: int) -> int:
        return min(FRAME - 1, grid * round(v / grid))

    def box(x1: int, y1: int, x2: int, y2: int) -> tuple[int, int, int, int]:
        x1, y1 = r(x1), r(y1)
        return x1, y1, max(r(x2), x1 + grid), max(r(y2), y1 + grid)  # a side never snaps to nothing

    return replace(prompt, boxes=[box(*b) for b in prompt.boxes],
                   points=[tuple(r(v) for v in point) for point in prompt.points])


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from reward_server.segmenters import build
        from rollout.hf_engine import HFEngine
        from rollout.tiny_model import NUMBER_TOKENS, build_tiny_vlm
        from segr1.chat import FOREGROUND_INSTRUCTION, encode_prompt, non_output_token_ids
        from segr1.data.synth import synth_sample

        self.args, self.start = args, time.time()
        self.dir = tempfile.mkdtemp(prefix="rl_probe_")
        build_tiny_vlm(self.dir, seed=0)
        self.model = AutoModelForImageTextToText.from_pretrained(self.dir, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(self.dir)
        self.tok = processor.tokenizer
        self.eos = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.number_ids = torch.tensor(self.tok.convert_tokens_to_ids([str(n) for n in range(NUMBER_TOKENS)]))
        self.masked = sorted(set(non_output_token_ids(self.tok)) - {self.eos, self.tok.convert_tokens_to_ids("<|endoftext|>")})
        self.segmenter = build("grabcut", iterations=5, margin=0, context=1.0, point_radius=3, seed=0)
        self.train = [synth_sample(0, i, FRAME) for i in range(args.train_n)]
        self.held = [synth_sample(1, i, FRAME) for i in range(64)]
        self.encoded = [encode_prompt(processor, image, FOREGROUND_INSTRUCTION, FRAME, SYSTEM) for image, _ in self.train]
        self.instruction = FOREGROUND_INSTRUCTION
        self.engine = HFEngine(self.dir, device="cpu", dtype="float32", system_prompt=SYSTEM)
        self.version = 0
        self.reference = None
        from reward_server.baselines import mask_box

        self.train_boxes = [mask_box(mask) for _, mask in self.train]  # read once: rewards and credit reuse them
        self.contrast_boxes = torch.tensor(self.train_boxes[:256], dtype=torch.float64)

    def log(self, text: str) -> None:
        print(f"[{time.time() - self.start:6.0f}s] {text}", flush=True)

    def sync(self) -> None:
        self.version += 1
        self.engine.update_weights(list(self.model.state_dict().items()), self.version)

    def reward(self, text: str, image: np.ndarray, mask: np.ndarray) -> tuple[float, float, bool]:
        """The product's reward (reward_server.scoring) for one completion: (reward, mask IoU, parsed)."""
        from reward_server.baselines import mask_box
        from reward_server.parse import FormatError, parse_completion
        from reward_server.scoring import box_giou, combine, score_masks

        try:
            prompt = parse_completion(text, FRAME, FRAME)
        except FormatError:
            return 0.0, 0.0, False
        predicted = self.segmenter.segment(image, [prompt])[0]
        iou, s = score_masks(torch.from_numpy(predicted[None]), torch.from_numpy(mask[None]))
        box = box_giou(prompt.boxes, mask_box(mask))
        if self.args.box_contrast:
            from torchvision.ops import generalized_box_iou

            predicted = torch.tensor(prompt.boxes, dtype=torch.float64) if prompt.boxes else None
            if predicted is not None:
                box -= self.args.box_contrast * float(generalized_box_iou(predicted, self.contrast_boxes).mean())
        (parts,) = combine([True], iou, s, [""], box=[box], w_box=self.args.box_weight)
        return parts.reward, parts.iou, True

    def update(self, optimizer, indices, targets, weights=None, token_adv=None) -> float:
        """One optimizer step of weighted mean-token log-likelihood (weights None: plain SFT)."""
        optimizer.zero_grad()
        self.loss(indices, targets, weights, token_adv).backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()
        return float(norm)

    def gradient(self, indices, targets, weights=None, token_adv=None) -> torch.Tensor:
        """The loss's gradient as one flat vector, no step taken (the --gradient-snr diagnostic)."""
        self.model.zero_grad()
        self.loss(indices, targets, weights, token_adv).backward()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double()
                          for p in self.model.parameters()])

    def loss(self, indices, targets, weights=None, token_adv=None) -> torch.Tensor:
        """Weighted mean-token log-likelihood loss of the given completions (weights None: plain SFT)."""
        from learner.batching import micro_batches, sft_records
        from learner.logprobs import completion_logprobs, token_logprobs
        from segr1.protocol import SFTItem

        items = [SFTItem(str(j), self.train[j][0], self.encoded[j][0], t) for j, t in zip(indices, targets)]
        (batch,) = micro_batches(sft_records(items, [self.encoded[j][1] for j in indices]), len(items), [self.eos],
                                 self.tok.pad_token_id)
        ids = {"image_token_id": self.model.config.image_token_id,
               "video_token_id": self.model.config.video_token_id, "masked_ids": self.masked}
        kl_term = None
        if weights is not None and (self.args.coord_entropy > 0 or self.args.coord_kl > 0):  # exact, with gradient
            out = self.model(**batch.model_inputs(ids["image_token_id"], ids["video_token_id"]), use_cache=False)
            logits = out.logits[:, :-1]
            logp, _ = token_logprobs(logits, batch.completion_ids, masked_ids=self.masked)
            padding = torch.arange(logp.shape[1])[None, :] >= batch.completion_lengths[:, None]
            logp = logp.masked_fill(padding, 0.0)
            # entropy among the number tokens only: spreading mass onto other tokens would break the grammar
            among = torch.log_softmax(out.logits[:, :-1, self.number_ids], dim=-1)
            entropy = -(among.exp() * among).sum(-1)
            if self.args.coord_kl > 0:  # hold the coordinate distribution near the broad warm-started one
                masked = torch.tensor(self.masked)
                log_probs = torch.log_softmax(logits.index_fill(-1, masked, float("-inf")), dim=-1)
                with torch.no_grad():
                    ref = self.reference(**batch.model_inputs(ids["image_token_id"], ids["video_token_id"]),
                                         use_cache=False).logits[:, :-1]
                    ref = torch.log_softmax(ref.index_fill(-1, masked, float("-inf")), dim=-1)
                finite = log_probs.isfinite() & ref.isfinite()
                kl = (log_probs.exp() * torch.where(finite, log_probs - ref, 0.0)).sum(-1)
                numbers = torch.isin(batch.completion_ids, self.number_ids) & batch.loss_mask.bool()
                kl_term = self.args.coord_kl * (kl * numbers).sum() / numbers.sum().clamp(min=1)
        else:
            logp, entropy = completion_logprobs(self.model, batch, **ids)
        mask = batch.loss_mask
        tokens = mask.sum(1).clamp(min=1)
        per_seq = (logp * mask).sum(1) / tokens
        loss = -(per_seq * (torch.ones(len(items)) if weights is None else weights)).mean()
        if token_adv is not None:
            width = logp.shape[1]
            extra = torch.stack([torch.nn.functional.pad(t, (0, width - len(t)))[:width] for t in token_adv])
            loss = loss - ((logp * extra * mask).sum(1) / tokens).mean()
        if weights is not None and self.args.entropy_coef > 0:
            # an entropy bonus, to hold off the collapse onto one box. On the policy's own samples,
            # grad H = -E[log p * grad log p], so minimising c * log p.detach() * log p raises H
            loss = loss + self.args.entropy_coef * ((logp.detach() * logp * mask).sum(1) / tokens).mean()
        if kl_term is not None:
            loss = loss + kl_term
        if entropy is not None and self.args.coord_entropy > 0:  # keep the coordinate distribution broad
            numbers = torch.isin(batch.completion_ids, self.number_ids) & mask.bool()
            loss = loss - self.args.coord_entropy * (entropy * numbers).sum() / numbers.sum().clamp(min=1)
        if weights is not None and self.args.beta > 0:
            with torch.no_grad():
                ref, _ = completion_logprobs(self.reference, batch, **ids)
            diff = ref - logp
            loss = loss + self.args.beta * (((diff.exp() - diff - 1) * mask).sum(1) / tokens).mean()
        return loss

    def evaluate(self, tag: str) -> None:
        from segr1.protocol import GenerationRequest, SamplingParams

        self.sync()
        requests = [GenerationRequest(str(i), image, self.instruction) for i, (image, _) in enumerate(self.held)]
        n = len(self.held)
        out = {}
        for name, sampling in (("greedy", SamplingParams(n=1, temperature=0.0, max_new_tokens=64, seed=0)),
                               ("sampled", SamplingParams(n=4, temperature=1.0, max_new_tokens=64, seed=123 + self.version))):
            texts = [[c.text for c in g.completions] for g in self.engine.generate(requests, sampling)]
            own = [self.reward(t, *self.held[i])[1] for i in range(n) for t in texts[i]]
            other = [self.reward(t, *self.held[i])[1] for i in range(n) for t in texts[(i + 1) % n]]
            out[name] = (np.mean(own), np.std(own) / np.sqrt(len(own)), np.mean(other), len({t[0] for t in texts}))
        g, s = out["greedy"], out["sampled"]
        self.log(f"EVAL {tag}: greedy iou {g[0]:.3f} (se {g[1]:.3f}) shuffled {g[2]:.3f} distinct {g[3]}/{n}; "
                 f"sampled iou {s[0]:.3f} shuffled {s[2]:.3f}")

    def gradient_snr(self, rng: np.random.Generator) -> None:
        """How strongly does one step of each method push the weights towards reading the image?

        The image-reading direction d is the part of the supervised gradient that depends on the image matching its
        target: the gradient on scenes 0..n-1 (--snr-scenes) with their own GT boxes minus the gradient with each
        scene's target taken from the next scene. Its two halves are compared to show d is not noise, and every
        projection is also taken on each half alone (a figure that changes sign between them is noise). Then
        for K fresh batches each of supervision (32 scenes, GT targets) and of GRPO (the probe's batch: prompts x G
        samples from the frozen policy; the paper reward's sequence advantages, and separately the contrasted
        per-coordinate credit) the gradient g is projected on d: its mean over batches (signal), its spread (noise)
        and the share of its norm that points along d. Nothing is stepped: all batches see the same weights."""
        from cluster.warm_start import ground_truth_prompt
        from learner.grpo import group_advantages
        from reward_server.parse import render
        from segr1.protocol import GenerationRequest, SamplingParams

        a = self.args

        def gt_target(j: int) -> list[int]:
            prompt = snap(ground_truth_prompt(self.train[j][1], rng), a.grid)
            return self.tok(render(prompt), add_special_tokens=False)["input_ids"] + [self.eos]

        def image_direction(scenes: range) -> torch.Tensor:
            own = sum(self.gradient(list(c), [gt_target(j) for j in c]) for c in np.array_split(scenes, len(scenes) // 32))
            other = sum(self.gradient(list(c), [gt_target(scenes[(j - scenes[0] + 1) % len(scenes)]) for j in c])
                        for c in np.array_split(scenes, len(scenes) // 32))
            return own - other

        n = a.snr_scenes
        halves = [image_direction(range(n // 2)), image_direction(range(n // 2, n))]
        agree = float(torch.nn.functional.cosine_similarity(halves[0], halves[1], dim=0))
        directions = [d / d.norm() for d in (halves[0] + halves[1], *halves)]
        self.log(f"SNR image direction from {n} scenes: cosine between its two halves {agree:.3f}")
        self.sync()
        rows: dict[str, list[tuple[float, ...]]] = {"supervised": [], "grpo_paper": [], "grpo_coord": []}
        for k in range(a.gradient_snr):
            batch = rng.choice(np.arange(n, len(self.train)), 32, replace=False).tolist()
            g = self.gradient(batch, [gt_target(j) for j in batch])
            rows["supervised"].append((*(float(g @ d) for d in directions), float(g.norm())))
            indices = rng.choice(np.arange(n, len(self.train)), a.prompts, replace=False)
            requests = [GenerationRequest(str(j), self.train[j][0], self.instruction) for j in indices]
            sampling = SamplingParams(n=a.group, temperature=1.0, max_new_tokens=64, seed=int(rng.integers(1 << 30)))
            rewards, owners, targets = [], [], []
            for j, group in zip(indices, self.engine.generate(requests, sampling)):
                for completion in group.completions:
                    rewards.append(self.reward(completion.text, *self.train[j])[0])
                    owners.append(int(j)), targets.append(list(completion.token_ids))
            adv = group_advantages(torch.tensor(rewards, dtype=torch.float32), a.group, a.scale)
            g = self.gradient(owners, targets, adv)
            rows["grpo_paper"].append((*(float(g @ d) for d in directions), float(g.norm())))
            token_adv = self.coordinate_advantages(owners, targets, credit=a.coord_credit or 1.0)
            g = self.gradient(owners, targets, torch.zeros(len(targets)), token_adv)
            rows["grpo_coord"].append((*(float(g @ d) for d in directions), float(g.norm())))
            if (k + 1) % 10 == 0:
                self.log(f"SNR batch {k + 1}/{a.gradient_snr}")
        base = None
        for name, values in rows.items():
            proj, first, second, norm = np.array(values).T
            mu, sigma = proj.mean(), proj.std(ddof=1)
            aligned = float(np.mean(proj / np.maximum(norm, 1e-30)))
            base = aligned if base is None else base
            self.log(f"SNR {name}: projection on d mean {mu:.3e} (se {sigma / np.sqrt(len(proj)):.1e}) std {sigma:.3e} "
                     f"snr/batch {mu / sigma:.3f}; |g| {norm.mean():.3e}; share of |g| along d {aligned:.4f} "
                     f"({aligned / base:.3f} of supervision's); batches for the mean to reach 2 std: "
                     f"{(2 * sigma / mu) ** 2 if mu > 0 else float('inf'):.0f}; on each half alone: mean "
                     f"{first.mean():.3e} (se {first.std(ddof=1) / np.sqrt(len(proj)):.1e}), "
                     f"{second.mean():.3e} (se {second.std(ddof=1) / np.sqrt(len(proj)):.1e})")

    def coordinate_advantages(self, owners: list[int], targets: list[list[int]],
                              credit: float | None = None) -> list[torch.Tensor]:
        """Per-token advantages [len(target)]: at each of the first 4 number tokens (the box), c * the group-centred
        -|coordinate - GT coordinate| / frame (c: `credit`, else --coord-credit); 0 elsewhere and for completions
        without 4 numbers."""
        credit = self.args.coord_credit if credit is None else credit
        numbers = set(self.number_ids.tolist())
        errors, places = [], []
        for j, ids in zip(owners, targets):
            at = [t for t, token in enumerate(ids) if token in numbers][:4]
            gt = self.train_boxes[j]
            if len(at) == 4:
                values = [int(self.tok.convert_ids_to_tokens(ids[t])) for t in at]
                error = [-abs(v - g) / FRAME for v, g in zip(values, gt)]
                if self.args.coord_contrast:  # minus the same value's mean error on other scenes: blind earns 0
                    blind = (self.contrast_boxes - torch.tensor(values, dtype=torch.float64)).abs().mean(0) / FRAME
                    error = [e + float(b) for e, b in zip(error, blind)]
                errors.append(error)
            else:
                errors.append(None)
            places.append(at)
        out = []
        g = self.args.group
        for start in range(0, len(targets), g):
            valid = [e for e in errors[start:start + g] if e is not None]
            mean = np.mean(valid, axis=0) if valid else None
            for i in range(start, start + g):
                adv = torch.zeros(len(targets[i]))
                if errors[i] is not None and len(valid) > 1:
                    adv[places[i]] = credit * torch.tensor(np.array(errors[i]) - mean, dtype=torch.float32)
                out.append(adv)
        return out

    def run(self) -> None:
        from cluster.warm_start import random_prompt
        from learner.grpo import group_advantages
        from reward_server.parse import render
        from segr1.protocol import GenerationRequest, SamplingParams

        a, rng = self.args, np.random.default_rng(self.args.seed)
        self.model.train()
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-3, weight_decay=0.0)
        for step in range(a.warm_start_steps):  # the product's warm start: image-independent random boxes
            indices = rng.integers(0, len(self.train), 16)
            targets = [self.tok(render(snap(random_prompt(FRAME, rng), a.grid)), add_special_tokens=False)
                       ["input_ids"] + [self.eos] for _ in indices]
            self.update(optimizer, indices, targets)
        self.evaluate("after warm start")
        if a.object_steps:
            from cluster.warm_start import ground_truth_prompt
            from segr1.data.synth import DISTRACTORS, _place_objects

            def any_object(index: int):
                scene = np.random.default_rng([0, int(index)])  # synth_sample's own stream: its masks, in order
                masks = _place_objects(scene, FRAME, 1 + int(scene.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)))
                # a throwaway generator for the (single) thought: the run's own stream is not drawn from
                return render(ground_truth_prompt(masks[int(rng.integers(len(masks)))], np.random.default_rng(0)))

            optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.0)
            for step in range(1, a.object_steps + 1):
                indices = rng.integers(0, len(self.train), 32)
                targets = [self.tok(any_object(j), add_special_tokens=False)["input_ids"] + [self.eos] for j in indices]
                self.update(optimizer, indices, targets)
                if step % 100 == 0:
                    self.evaluate(f"object step {step}")
        if a.gradient_snr:
            self.gradient_snr(rng)
            return
        if a.gt_steps:  # diagnostic: can the warm-started policy still learn to look? (supervised, GT targets)
            from cluster.warm_start import ground_truth_prompt

            optimizer = torch.optim.AdamW(self.model.parameters(), lr=a.lr, weight_decay=0.0)
            for step in range(1, a.gt_steps + 1):
                indices = rng.integers(0, len(self.train), 32)
                targets = [self.tok(render(ground_truth_prompt(self.train[j][1], rng)), add_special_tokens=False)
                           ["input_ids"] + [self.eos] for j in indices]
                self.update(optimizer, indices, targets)
                if step % a.eval_every == 0:
                    self.evaluate(f"GT step {step}")
            return
        self.reference = copy.deepcopy(self.model).eval() if a.beta > 0 or a.coord_kl > 0 else None
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=a.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(a.warmup, 1)))
        for step in range(1, a.steps + 1):
            self.sync()
            indices = rng.choice(len(self.train), a.prompts, replace=False)
            requests = [GenerationRequest(str(j), self.train[j][0], self.instruction) for j in indices]
            sampling = SamplingParams(n=a.group, temperature=1.0, max_new_tokens=64, seed=int(rng.integers(1 << 30)))
            rewards, ious, formats, owners, targets = [], [], [], [], []
            for j, group in zip(indices, self.engine.generate(requests, sampling)):
                for completion in group.completions:
                    r, iou, ok = self.reward(completion.text, *self.train[j])
                    rewards.append(r), ious.append(iou), formats.append(ok)
                    owners.append(j), targets.append(list(completion.token_ids))
            adv = group_advantages(torch.tensor(rewards, dtype=torch.float32), a.group, a.scale)
            token_adv = self.coordinate_advantages(owners, targets) if a.coord_credit else None
            keep = [i for i in range(len(rewards)) if adv[i] != 0 or a.beta > 0 or a.entropy_coef > 0
                    or (token_adv is not None and bool(token_adv[i].any()))]
            norm = 0.0
            if keep:  # a batch without signal is not stepped: Adam would move the weights on its old moments
                weights = a.sequence_weight * adv[keep] * len(keep) / len(rewards)
                extra = None if token_adv is None else [token_adv[i] * len(keep) / len(rewards) for i in keep]
                norm = self.update(optimizer, [owners[i] for i in keep], [targets[i] for i in keep], weights, extra)
                schedule.step()
            if step % 10 == 0:
                self.log(f"step {step}: reward {np.mean(rewards):.3f} iou {np.mean(ious):.3f} "
                         f"format {np.mean(formats):.2f} grad_norm {norm:.2f}")
            if step % a.eval_every == 0:
                self.evaluate(f"step {step}")
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
