"""WorkerGroup: N Ray actors of one role, placed together, called with typed fan-out.

A role's class is a plain Python class (``RolloutWorker``, ``LearnerWorker``, ...); the group makes it
remote, reserves a placement group with one bundle per worker (PACK keeps them on as few nodes as
possible, SPREAD across nodes), and calls methods by reference to the class attribute, so a type
checker sees the real signature and a typo is an ``AttributeError`` at the call site, not a string
that fails on the far side::

    group = WorkerGroup("rollout", RolloutWorker, 2, args=lambda rank: ((path, cfg), {"seed": rank}))
    versions = group.call(RolloutWorker.version)                 # same call on every worker
    outs = group.call_each(RolloutWorker.generate, [(p0, s), (p1, s)])   # one argument set each

A worker that died raises ``WorkerDiedError`` naming the role and the rank.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Concatenate, Generic, ParamSpec, Sequence, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

ArgsFn = Callable[[int], tuple[tuple[Any, ...], dict[str, Any]]]


def create_named(remote_cls: Any, options: dict[str, Any], name: str, args: tuple, kwargs: dict) -> Any:
    """Create the actor named ``role-rank`` (how the Ray dashboard lists it); when another group of
    the same job holds that name, ``role-rank.2``, ``.3``, ..."""
    for attempt in range(1, 100):
        candidate = name if attempt == 1 else f"{name}.{attempt}"
        try:
            return remote_cls.options(**options, name=candidate).remote(*args, **kwargs)
        except ValueError as err:
            if "already taken" not in str(err):
                raise
    return remote_cls.options(**options).remote(*args, **kwargs)


class WorkerDiedError(RuntimeError):
    """A worker of a group died (crashed, was killed, or its node went away)."""

    def __init__(self, role: str, rank: int, cause: BaseException):
        super().__init__(f"{role} worker rank {rank} died: {type(cause).__name__}: {cause}")
        self.role, self.rank, self.cause = role, rank, cause


class PlacementError(RuntimeError):
    """The cluster cannot host the group's bundles (not enough CPUs/GPUs, or nodes for SPREAD)."""


class WorkerGroup(Generic[T]):
    """``n`` actors of ``cls`` for one ``role``, each in its own bundle of a placement group."""

    def __init__(
        self,
        role: str,
        cls: type[T],
        n: int,
        *,
        args: ArgsFn | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        strategy: str = "PACK",
        max_restarts: int = 0,
        env_vars: dict[str, str] | None = None,
        placement_timeout_s: float = 120.0,
        start: bool = True,
    ):
        """Reserve the placement group and, with ``start``, create the actors: ``args(rank)`` gives
        each rank's constructor ``(args, kwargs)``. With ``start=False`` call ``start(args)`` later,
        e.g. once a rendezvous address has been found on bundle 0's node."""
        if n < 1:
            raise ValueError(f"a {role} group needs at least 1 worker, got {n}")
        if num_cpus <= 0 and num_gpus <= 0:
            raise ValueError(f"{role} workers must reserve some CPU or GPU")
        self.role, self.cls, self.n = role, cls, n
        bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus > 0 else {})}
        self._pg = placement_group([dict(bundle) for _ in range(n)], strategy=strategy)
        try:
            ray.get(self._pg.ready(), timeout=placement_timeout_s)
        except GetTimeoutError:
            remove_placement_group(self._pg)
            raise PlacementError(
                f"cannot place {n} {role} worker(s) of {bundle} with strategy {strategy} within "
                f"{placement_timeout_s:.0f} s; the cluster has {ray.available_resources()} available"
            ) from None
        self._options = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts)
        self._env_vars = env_vars
        self._actors: list[Any] = []
        if start:
            self.start(args)

    @property
    def placement_group(self) -> Any:
        """The group's placement group (bundle ``i`` hosts rank ``i``)."""
        return self._pg

    def start(self, args: ArgsFn | None = None) -> None:
        """Create one actor per bundle; ``args(rank)`` gives its constructor arguments."""
        if self._actors:
            raise RuntimeError(f"the {self.role} group is already started")
        remote_cls = ray.remote(self.cls)
        args = args or (lambda rank: ((), {}))
        for rank in range(self.n):
            a, kw = args(rank)
            options: dict[str, Any] = {
                **self._options,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=rank
                ),
            }
            if self._env_vars:
                options["runtime_env"] = {"env_vars": dict(self._env_vars)}
            self._actors.append(create_named(remote_cls, options, f"{self.role}-{rank}", a, kw))

    @property
    def actors(self) -> list[Any]:
        """The actor handles, by rank."""
        return list(self._actors)

    def call(
        self, method: Callable[Concatenate[T, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> list[R]:
        """Call ``method`` with the same arguments on every worker; results by rank."""
        return self.gather(self.submit(method, *args, **kwargs))

    def call_each(
        self,
        method: Callable[Concatenate[T, P], R],
        per_rank: Sequence[tuple[Any, ...]],
        **common: Any,
    ) -> list[R]:
        """Call ``method`` on worker ``i`` with ``per_rank[i]`` (positional arguments) and the
        keyword arguments ``common`` shared by all."""
        if len(per_rank) != self.n:
            raise ValueError(f"{len(per_rank)} argument sets for {self.n} {self.role} workers")
        name = self._name(method)
        refs = [getattr(actor, name).remote(*a, **common) for actor, a in zip(self._actors, per_rank)]
        return self.gather(refs)

    def submit(
        self, method: Callable[Concatenate[T, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> list[ray.ObjectRef]:
        """Like ``call`` without waiting: object refs by rank, for ``gather`` later."""
        name = self._name(method)
        return [getattr(actor, name).remote(*args, **kwargs) for actor in self._actors]

    def gather(self, refs: Sequence[ray.ObjectRef], timeout_s: float | None = None) -> list[Any]:
        """Wait for ``refs`` (one per rank); a dead worker raises ``WorkerDiedError``."""
        out = []
        for rank, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=timeout_s))
            except RayActorError as err:
                raise WorkerDiedError(self.role, rank, err) from err
        return out

    def _name(self, method: Callable[..., Any]) -> str:
        name = getattr(method, "__name__", None)
        if name is None or getattr(self.cls, name, None) is not method:
            raise TypeError(
                f"{method!r} is not a method of {self.cls.__name__}; pass it as {self.cls.__name__}.<method>"
            )
        return name

    def kill(self, rank: int, no_restart: bool = True, wait_s: float = 60.0) -> None:
        """Kill one worker (tests and fault drills). ``ray.kill`` only asks; with ``no_restart`` this
        returns once the actor is gone, so the next call sees a dead worker, never a race."""
        actor = self._actors[rank]
        ray.kill(actor, no_restart=no_restart)
        if not no_restart:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=5)
            except RayActorError:
                return
            except GetTimeoutError:
                continue
            time.sleep(0.05)
        raise RuntimeError(f"{self.role} worker rank {rank} still answers {wait_s:g} s after being killed")

    def shutdown(self, grace_s: float = 0.0) -> None:
        """Kill every worker and release the placement group; safe to call twice."""
        if grace_s:
            time.sleep(grace_s)
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors = []
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None

    def __enter__(self) -> WorkerGroup[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
