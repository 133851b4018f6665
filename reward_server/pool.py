"""RewardPool: M RewardActors behind one `score(requests)` call; a driver-side thread dispatches and collects.

- Routing: a batch goes to the least-loaded live actor (fewest groups in flight); each actor holds at most
  `BATCHES_PER_ACTOR` calls, so work waits here (the queue depth) rather than in one actor's mailbox.
- Dynamic batching: up to `reward.max_batch_groups` groups per call, split evenly over the free actors; a
  part-filled batch waits at most `reward.max_wait_s` for more groups (from this or other callers).
- Faults: actors restart forever (Ray `max_restarts=-1`) but Ray does not retry their calls itself; when an
  actor dies mid-call, or a call outlives `reward.timeout_s` (the actor is hung: the pool kills it and Ray
  restarts it), the pool puts that call's groups back at the head of the queue, preferring another actor, at
  most `reward.max_retries` times per group; then the group fails with segr1.faults.StageError naming it and
  the actor. Every group's result is delivered exactly once; a failed group is never given a reward.
- `gather(..., drop_failed=True)` returns None for a group that failed so (the trainer drops and counts it).
- `score` / `gather` raise TimeoutError after (reward.max_retries + 2) x reward.timeout_s, a backstop past
  every group's own bound, naming the groups still pending and where they are.
- `resize(m)` adds actors, or stops routing to removed ones and kills each once its calls have finished.
- `baselines(...)` runs the blind/oracle baselines on one actor (outside the batching queue), so they use
  the run's own segmenter; an actor that dies meanwhile is retried like a group, up to `reward.max_retries`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Self

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from reward_server.actor import RewardActor
from reward_server.baselines import BaselineScores
from reward_server.throughput import Throughput
from segr1.config import Config
from segr1.faults import StageError
from segr1.protocol import GroupReward, RewardRequest

BATCHES_PER_ACTOR = 2  # one call running and one queued behind it, so an actor never idles between calls
PROBE_EVERY_S = 0.2  # how often a restarting actor is asked whether it is back


@dataclass(eq=False)
class _Ticket:  # one group on its way through the pool
    request: RewardRequest
    future: Future
    enqueued_at: float
    failures: int = 0
    actor_id: str = ""  # the actor it is in flight on ("" while queued)
    failed_on: str = ""  # the actor whose death last sent it back to the queue
    hung_on: str = ""  # the actor last killed for holding it past reward.timeout_s


@dataclass(eq=False)
class _Slot:
    actor_id: str
    handle: Any  # ray ActorHandle of RewardActor
    batches: int = 0  # calls in flight
    groups: int = 0  # groups in flight
    draining: bool = False
    # after a call was lost the actor is restarting (Ray rejects calls meanwhile): no work until it answers a
    # health probe, so requeued groups wait for it instead of spending their retries on its restart
    recovering: bool = False
    probe_at: float = 0.0  # when to send the next probe (none in flight)


class RewardPool:
    """Driver-side pool of `num_actors` RewardActors (Ray actors with resources from `cfg.reward`)."""

    def __init__(self, cfg: Config, num_actors: int | None = None) -> None:
        reward = cfg.reward
        self._cfg = cfg
        self._remote_cls = ray.remote(RewardActor).options(
            num_cpus=reward.num_cpus, num_gpus=reward.num_gpus, resources=dict(reward.resources),
            max_restarts=-1, max_task_retries=0,  # Ray restarts a dead actor, on another node if its node is gone
        )
        self._lock = threading.Condition()
        self._slots: dict[str, _Slot] = {}
        self._pending: deque[_Ticket] = deque()
        self._in_flight: dict[ray.ObjectRef, tuple[_Slot, list[_Ticket]]] = {}
        self._sent_at: dict[ray.ObjectRef, float] = {}  # when each call in flight was sent (hung-call timeout)
        self._probes: dict[ray.ObjectRef, _Slot] = {}  # health probes of recovering actors
        self._actor_numbers = itertools.count()
        self._stopped = False
        self._throughput = Throughput()
        self.resize(reward.num_actors if num_actors is None else num_actors)
        self._thread = threading.Thread(target=self._run, name="reward-pool", daemon=True)
        self._thread.start()

    @property
    def size(self) -> int:
        """Live actors (removed actors still draining are not counted)."""
        return len(self.actor_handles())

    def submit(self, requests: Sequence[RewardRequest]) -> list[Future]:
        """Queue groups; each future resolves to its GroupReward (or the error that ended it)."""
        return [ticket.future for ticket in self._enqueue(requests)]

    def score(self, requests: Sequence[RewardRequest]) -> list[GroupReward]:
        """Rewards of all groups, in request order, each exactly once; TimeoutError after reward.timeout_s."""
        return self.gather(self.submit(requests))

    def gather(self, futures: Sequence[Future], drop_failed: bool = False) -> list[GroupReward | None]:
        """The results of `submit`'s futures, in their order; with drop_failed, None for a group whose retries
        are spent (StageError) instead of raising it. TimeoutError after the backstop (module docstring) from
        now, naming the groups still pending (they are cancelled). Streaming callers submit shard by shard."""
        deadline = time.monotonic() + self._cfg.reward.timeout_s * (self._cfg.reward.max_retries + 2)
        results: list[GroupReward | None] = []
        try:
            for future in futures:
                try:
                    results.append(future.result(timeout=max(deadline - time.monotonic(), 0.0)))
                except StageError:
                    if not drop_failed:
                        raise
                    results.append(None)
            return results
        except TimeoutError:
            with self._lock:
                tickets = {id(t.future): t for t in [*self._pending, *self._in_flight_tickets()]}
            # a future no longer queued or in flight is being delivered: it counts as done
            raise TimeoutError(self._abandon([tickets[id(f)] for f in futures if id(f) in tickets],
                                             total=len(futures))) from None

    def baselines(
        self, train_images: Sequence[Any], train_masks: Sequence[Any], eval_images: Sequence[Any],
        eval_masks: Sequence[Any], frame: int,
    ) -> BaselineScores:
        """RewardActor.baselines on the least-loaded live actor, which counts as busy meanwhile (the
        dispatcher prefers the others). TimeoutError after reward.timeout_s."""
        args = [ray.put(list(part)) for part in (train_images, train_masks, eval_images, eval_masks)]
        failures = 0
        while True:
            with self._lock:
                live = [slot for slot in self._slots.values() if not slot.draining]
                if not live:
                    raise RuntimeError("reward pool is closed")
                slot = min(live, key=lambda s: (s.recovering, s.groups, s.batches))  # a restarting one last
                slot.batches += 1
            try:
                return ray.get(slot.handle.baselines.remote(*args, frame), timeout=self._cfg.reward.timeout_s)
            except GetTimeoutError:
                raise TimeoutError(f"reward pool: baselines not computed on {slot.actor_id} within "
                                   f"reward.timeout_s={self._cfg.reward.timeout_s}s") from None
            except RayActorError:
                failures += 1
                if failures > self._cfg.reward.max_retries:
                    raise
            finally:
                with self._lock:
                    slot.batches -= 1
                    self._retire_if_drained(slot)
                    self._lock.notify_all()

    def resize(self, num_actors: int) -> None:
        """Grow by starting actors, or shrink: removed actors take no new work and stop once drained."""
        if num_actors < 1:
            raise ValueError(f"reward pool size must be >= 1, got {num_actors}")
        with self._lock:
            live = [slot for slot in self._slots.values() if not slot.draining]
            for _ in range(num_actors - len(live)):
                actor_id = f"reward-{next(self._actor_numbers)}"
                self._slots[actor_id] = _Slot(actor_id, self._remote_cls.remote(self._cfg, actor_id))
            # Remove the least-loaded actors first, newest first among equals: they finish draining soonest.
            by_load = sorted(live, key=lambda slot: (slot.groups, -live.index(slot)))
            for slot in by_load[: max(len(live) - num_actors, 0)]:
                slot.draining = True
                self._retire_if_drained(slot)
            self._lock.notify_all()

    def actor_handles(self) -> dict[str, Any]:
        """Live actors by id (for health checks and fault injection)."""
        with self._lock:
            return {slot.actor_id: slot.handle for slot in self._slots.values() if not slot.draining}

    def stats(self) -> dict[str, float]:
        """groups_per_s, masks_per_s (over the time the pool had work) and encode_s / decode_s (actor seconds)
        since the previous call; queue depth, groups in flight and actors now; *_total counts since the start."""
        with self._lock:
            slots = list(self._slots.values())
            return {
                **self._throughput.read(time.monotonic()),
                "queue_depth": float(len(self._pending)),
                "in_flight": float(sum(slot.groups for slot in slots)),
                "actors": float(sum(not slot.draining for slot in slots)),
                "draining": float(sum(slot.draining for slot in slots)),
            }

    def close(self) -> None:
        """Stop the dispatcher and kill every actor; queued groups fail with RuntimeError."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._thread.join(timeout=10)
        self._fail_all(RuntimeError("reward pool closed"))
        with self._lock:
            for slot in self._slots.values():
                ray.kill(slot.handle, no_restart=True)
            self._slots.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _enqueue(self, requests: Sequence[RewardRequest]) -> list[_Ticket]:
        tickets = [_Ticket(request, Future(), time.monotonic()) for request in requests]
        with self._lock:
            if self._stopped:
                raise RuntimeError("reward pool is closed")
            self._pending.extend(tickets)
            self._lock.notify_all()
        return tickets

    def _in_flight_tickets(self) -> list[_Ticket]:
        return [ticket for _, batch in self._in_flight.values() for ticket in batch]

    def _abandon(self, tickets: list[_Ticket], total: int) -> str:
        """Cancel the unfinished groups of a timed-out call; describe where each one was."""
        with self._lock:
            late = [ticket for ticket in tickets if not ticket.future.done()]
            for ticket in late:
                ticket.future.cancel()  # a result arriving later is dropped
            where = ", ".join(f"{t.request.group_id} ({t.actor_id or 'queued'})" for t in late)
        return (
            f"reward pool: {len(late)} of {total} groups not scored within (reward.max_retries + 2) x "
            f"reward.timeout_s={self._cfg.reward.timeout_s}s, as group (actor holding it): {where}"
        )

    def _run(self) -> None:
        """Dispatcher loop: send ready batches, collect finished calls. A crash fails every waiting group."""
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        return
                    self._probe(time.monotonic())
                    self._dispatch(time.monotonic())
                    refs = [*self._in_flight, *self._probes]
                    recovering = any(slot.recovering for slot in self._slots.values())
                    if not refs:
                        wait = self._pending or recovering
                        self._lock.wait(timeout=max(self._cfg.reward.max_wait_s, PROBE_EVERY_S) if wait else None)
                        continue
                # Short waits so groups submitted meanwhile are batched within about max_wait_s.
                ready, _ = ray.wait(refs, num_returns=1, timeout=max(self._cfg.reward.max_wait_s, 0.005))
                for ref in ready:
                    self._probed(ref) if ref in self._probes else self._collect(ref)
                self._kill_hung(time.monotonic())
        except Exception as error:  # noqa: BLE001  callers must not wait for a dead dispatcher until timeout
            self._stopped = True
            self._fail_all(RuntimeError(f"reward pool dispatcher failed: {error!r}"))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            for ticket in [*self._pending, *self._in_flight_tickets()]:
                _resolve(ticket.future, exception=error)

    def _dispatch(self, now: float) -> None:
        """Send batches to free actors (lock held)."""
        live = [slot for slot in self._slots.values() if not slot.draining]
        max_groups, max_wait_s = self._cfg.reward.max_batch_groups, self._cfg.reward.max_wait_s
        while self._pending:
            free = [slot for slot in live if slot.batches < BATCHES_PER_ACTOR and not slot.recovering]
            filling = len(self._pending) < max_groups and now - self._pending[0].enqueued_at < max_wait_s
            if not free or filling:
                return  # no actor can take work, or a fuller batch may still form
            size = min(max_groups, math.ceil(len(self._pending) / len(free)))
            for slot in sorted(free, key=lambda s: (s.groups, s.batches)):  # least loaded first
                batch = self._take(size, avoid=slot.actor_id if len(live) > 1 else "")
                if batch:
                    break
            else:
                return  # only groups that just failed on the free actors remain: wait for another
            for ticket in batch:
                ticket.actor_id = slot.actor_id
            ref = slot.handle.score.remote([ticket.request for ticket in batch])
            self._in_flight[ref] = (slot, batch)
            self._sent_at[ref] = now
            slot.batches += 1
            slot.groups += len(batch)
            self._throughput.set_busy(True, now)

    def _take(self, size: int, avoid: str) -> list[_Ticket]:
        """Up to `size` queued groups in order, minus cancelled ones and any that just failed on `avoid`."""
        taken: list[_Ticket] = []
        kept: deque[_Ticket] = deque()
        while self._pending and len(taken) < size:
            ticket = self._pending.popleft()
            if ticket.future.cancelled():
                continue
            (kept if avoid and ticket.failed_on == avoid else taken).append(ticket)
        self._pending.extendleft(reversed(kept))
        return taken

    def _probe(self, now: float) -> None:
        """Send a health probe to each recovering actor that has none in flight and is due one (lock held)."""
        for slot in self._slots.values():
            if slot.recovering and slot.probe_at and now >= slot.probe_at:
                slot.probe_at = 0.0
                self._probes[slot.handle.health.remote()] = slot

    def _probed(self, ref: ray.ObjectRef) -> None:
        """A probe answered: the actor takes work again; or it failed: probe again shortly."""
        with self._lock:
            slot = self._probes.pop(ref)
        try:
            ray.get(ref)
        except RayActorError:
            with self._lock:
                slot.probe_at = time.monotonic() + PROBE_EVERY_S
            return
        with self._lock:
            slot.recovering = False
            self._lock.notify_all()

    def _kill_hung(self, now: float) -> None:
        """Kill the actor of every call older than reward.timeout_s (Ray restarts it): the call then fails as
        in a death and its groups are requeued (an actor's other queued call goes back with it)."""
        timeout_s = self._cfg.reward.timeout_s
        with self._lock:
            hung = [ref for ref, sent in self._sent_at.items() if now - sent > timeout_s]
            slots = []
            for ref in hung:
                del self._sent_at[ref]
                slot, batch = self._in_flight[ref]
                for ticket in batch:
                    ticket.hung_on = slot.actor_id
                slots.append(slot)
        for slot in slots:
            ray.kill(slot.handle, no_restart=False)

    def _collect(self, ref: ray.ObjectRef) -> None:
        """Deliver a finished call's results, or requeue its groups if the actor died."""
        with self._lock:
            slot, batch = self._in_flight.pop(ref)
            self._sent_at.pop(ref, None)
            now = time.monotonic()
            for other, (holder, _) in self._in_flight.items():  # a call queued behind this one starts now
                if holder is slot and other in self._sent_at:
                    self._sent_at[other] = max(self._sent_at[other], now)
        try:
            results: list[GroupReward] = ray.get(ref)
        except RayActorError as error:
            self._requeue(slot, batch, error)
            with self._lock:
                if not slot.recovering:
                    slot.recovering, slot.probe_at = True, time.monotonic()
        except RayError as error:  # the actor raised: deterministic, so retrying would fail again
            for ticket in batch:
                _resolve(ticket.future, exception=error)
        else:
            self._deliver(batch, results)
        with self._lock:
            slot.batches -= 1
            slot.groups -= len(batch)
            self._retire_if_drained(slot)
            if not self._in_flight:
                self._throughput.set_busy(False, time.monotonic())

    def _deliver(self, batch: list[_Ticket], results: list[GroupReward]) -> None:
        with self._lock:
            self._throughput.add(
                groups=len(results),
                masks=sum(not b.reason for r in results for b in r.breakdowns),  # parsed ones were segmented
                encode_s=sum(r.encode_s for r in results),
                decode_s=sum(r.decode_s for r in results),
            )
        for ticket, result in zip(batch, results, strict=True):
            _resolve(ticket.future, result=result)

    def _requeue(self, slot: _Slot, batch: list[_Ticket], error: Exception) -> None:
        retry_limit = self._cfg.reward.max_retries
        with self._lock:
            retry = []
            for ticket in batch:
                ticket.failures += 1
                ticket.actor_id, ticket.failed_on = "", slot.actor_id
                why = (f"hung past reward.timeout_s={self._cfg.reward.timeout_s:g}s, killed"
                       if ticket.hung_on == slot.actor_id else f"died: {type(error).__name__}")
                ticket.hung_on = ""
                if ticket.failures > retry_limit:
                    _resolve(ticket.future, exception=StageError("score", slot.actor_id, (
                        f"reward group {ticket.request.group_id!r} lost {ticket.failures} times to dying or hung "
                        f"actors (last {slot.actor_id}: {why}); reward.max_retries={retry_limit}")))
                elif not ticket.future.cancelled():
                    retry.append(ticket)
            self._throughput.add(retries=len(retry))
            self._pending.extendleft(reversed(retry))  # head of the queue, original order
            self._lock.notify_all()

    def _retire_if_drained(self, slot: _Slot) -> None:
        if slot.draining and slot.batches == 0 and slot.actor_id in self._slots:
            del self._slots[slot.actor_id]
            ray.kill(slot.handle, no_restart=True)


def _resolve(future: Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Set a future once; a future cancelled by a timed-out caller drops its late result."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exception) if exception is not None else future.set_result(result)
