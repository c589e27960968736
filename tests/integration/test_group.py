"""WorkerGroup on a real local Ray: placement, typed fan-out, scatter, and a dead worker's error."""

from __future__ import annotations

import sys

from ray import cloudpickle
import pytest

from actors.group import PlacementError, WorkerDiedError, WorkerGroup

# Ray workers cannot import this test module by name: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Echo:
    def __init__(self, rank: int, tag: str = ""):
        self.rank, self.tag = rank, tag

    def whoami(self) -> str:
        return f"{self.tag}{self.rank}"

    def add(self, x: int, y: int = 0) -> int:
        return self.rank * 100 + x + y

    def pid(self) -> int:
        import os

        return os.getpid()


def test_fan_out_scatter_and_errors(ray_session):
    with WorkerGroup("echo", Echo, 2, args=lambda r: ((r,), {"tag": "w"}), num_cpus=0.5) as group:
        assert group.call(Echo.whoami) == ["w0", "w1"]
        assert group.call(Echo.add, 1, y=2) == [3, 103]
        assert group.call_each(Echo.add, [(5,), (7,)]) == [5, 107]
        assert group.call_each(Echo.add, [(5,), (7,)], y=1) == [6, 108]
        refs = group.submit(Echo.add, 10)
        assert group.gather(refs) == [10, 110]
        assert len(set(group.call(Echo.pid))) == 2  # one process per worker
        # actors are named role-rank (the Ray dashboard lists them so); a second group gets role-rank.2
        assert ray_session.get(ray_session.get_actor("echo-1").whoami.remote()) == "w1"
        with WorkerGroup("echo", Echo, 1, args=lambda r: ((7,), {}), num_cpus=0.5) as second:
            assert ray_session.get(ray_session.get_actor("echo-0.2").whoami.remote()) == "7"
            assert second.call(Echo.whoami) == ["7"]
        with pytest.raises(ValueError, match="1 argument sets for 2 echo workers"):
            group.call_each(Echo.add, [(1,)])
        with pytest.raises(TypeError, match="not a method of Echo"):
            group.call(str.upper)  # type: ignore[arg-type]
        group.kill(1)
        with pytest.raises(WorkerDiedError, match="echo worker rank 1 died"):
            group.call(Echo.whoami)


def test_a_kill_with_restart_returns_once_the_new_actor_answers(ray_session):
    """``kill(rank, no_restart=False)`` returns only when Ray's restarted copy answers, so the very
    next call always meets the new incarnation and counts it (``ray.kill`` alone only asks: a call
    right after it could still reach the old actor and see no restart)."""
    with WorkerGroup("echo", Echo, 1, args=lambda r: ((r,), {}), num_cpus=0.5, max_restarts=3) as group:
        pids = [group.call_each_retrying(Echo.pid, [()])[0]]
        for killed in (1, 2):
            group.kill(0, no_restart=False)
            pids.append(group.call_each_retrying(Echo.pid, [()])[0])
            assert group.restarts == killed
        assert len(set(pids)) == 3


def test_spread_strategy_places_on_one_node(ray_session):
    with WorkerGroup("echo", Echo, 2, args=lambda r: ((r,), {}), num_cpus=0.5, strategy="SPREAD") as g:
        assert g.call(Echo.whoami) == ["0", "1"]


def test_impossible_placement_fails_clearly(ray_session):
    with pytest.raises(PlacementError, match=r"cannot place 1 learner worker\(s\)"):
        WorkerGroup("learner", Echo, 1, num_cpus=1.0, num_gpus=1.0, placement_timeout_s=2)
