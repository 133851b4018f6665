"""Requests from `segr1 scale` / `segr1 stop` reach the loop between steps and are never dropped silently."""

from __future__ import annotations

import threading

import pytest

from cluster.requests import RequestNotApplied, RunRequests


def _in_thread(fn):
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the test thread, which asserts on it
            out["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_a_waiting_scale_returns_what_the_loop_applied():
    requests = RunRequests()
    thread, out = _in_thread(lambda: requests.scale({"rollout": 2}, wait_s=30))
    while True:  # the loop thread's next step boundary
        sizes, waiters = requests.take_scale()
        if waiters:
            break
    assert sizes == {"rollout": 2}
    requests.answer(waiters, result={"rollout": 2, "reward": 1, "before_step": 5})
    thread.join(5)
    assert out["value"] == {"applied": True, "rollout": 2, "reward": 1, "before_step": 5}


def test_queued_resizes_merge_with_the_newest_size_winning():
    requests = RunRequests()
    requests.scale({"rollout": 3}, wait_s=None)
    requests.scale({"rollout": 2, "reward": 4}, wait_s=None)
    sizes, waiters = requests.take_scale()
    assert sizes == {"rollout": 2, "reward": 4} and len(waiters) == 2
    assert requests.take_scale() == ({}, [])


def test_a_run_that_ends_first_answers_with_an_error_not_silence():
    requests = RunRequests()
    thread, out = _in_thread(lambda: requests.scale({"reward": 2}, wait_s=30))
    while not requests._scales:
        pass
    requests.close("run 'x' ended at step 8 of 8")
    thread.join(5)
    assert isinstance(out["error"], RequestNotApplied) and "step 8 of 8" in str(out["error"])
    with pytest.raises(RequestNotApplied, match="ended at step 8"):
        requests.scale({"rollout": 1}, wait_s=None)
    with pytest.raises(RequestNotApplied):
        requests.stop()


def test_a_failed_resize_reaches_the_caller_and_a_wait_can_time_out():
    requests = RunRequests()
    thread, out = _in_thread(lambda: requests.scale({"rollout": 9}, wait_s=30))
    while not requests._scales:
        pass
    _, waiters = requests.take_scale()
    requests.answer(waiters, error="resize {'rollout': 9} failed: no resources")
    thread.join(5)
    assert "no resources" in str(out["error"])
    with pytest.raises(TimeoutError, match="not applied within"):
        requests.scale({"rollout": 2}, wait_s=0.05)


def test_stop_is_seen_by_the_loop():
    requests = RunRequests()
    assert not requests.stop_requested()
    requests.stop()
    assert requests.stop_requested()
