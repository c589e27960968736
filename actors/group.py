"""WorkerGroup: N Ray actors of one role, placed together, called with typed fan-out.

A role's class is a plain Python class (``RolloutWorker``, ``LearnerWorker``, ...); the group makes it
remote, reserves a placement group with one bundle per worker (PACK keeps them on as few nodes as
possible, SPREAD across nodes), and calls methods by reference to the class attribute, so a type
checker sees the real signature and a typo is an ``AttributeError`` at the call site, not a string
that fails on the far side::

    group = WorkerGroup("rollout", RolloutWorker, 2, args=lambda rank: ((path, cfg), {"seed": rank}))
    versions = group.call(RolloutWorker.version)                 # same call on every worker
    outs = group.call_each(RolloutWorker.generate, [(p0, s), (p1, s)])   # one argument set each

A worker that died raises ``WorkerDiedError`` naming the role and the rank, as soon as its call
fails (``gather`` watches every rank at once: a dead learner rank surfaces while its peers still wait
in a collective for it).

**Restarts.** With ``max_restarts=N`` Ray restarts a dead actor (its constructor runs again with the
same arguments) up to N times; ``call_each_retrying`` turns that into a call that survives it::

    outs = group.call_each_retrying(RolloutWorker.generate, per_rank, on_restart=push_weights_to)

Ray itself never re-runs a lost call (``max_task_retries=0``): the group knows which rank's request
was lost, waits until that actor is alive again, lets ``on_restart(rank)`` restore its state (a
restarted rollout engine serves the base model until it is given the current weights), re-issues
that rank's request only, and counts the restart (``restarts``, ``restarts_by_rank``). A worker that
died and was restarted between calls (no call was lost, but its state was) is caught too: each call
is preceded by a query of the actor's incarnation (its Ray worker id), so the call's result from a
fresh incarnation is discarded and re-issued after the hook. With no restarts left, or
``max_restarts=0``, the call raises ``WorkerDiedError``.

**Streams and concurrency groups.** ``stream`` calls a generator method on one rank and returns
Ray's ``ObjectRefGenerator`` (one ref per yielded item, as each is yielded). A group created with
``concurrency_groups={"control": 1}`` runs its actors threaded: every method stays in the default
group of one thread (calls run one at a time, in order), and ``call_in_group("control", ...)``
reaches the workers from a thread of its own, while a long call such as a stream is in progress::

    group = WorkerGroup("rollout", RolloutWorker, 2, args=..., concurrency_groups={"control": 1})
    gen = group.stream(0, RolloutWorker.generate_stream, prompts, sampling, group_ids, call_id)
    group.call_in_group("control", RolloutWorker.request_abort, call_id)   # runs beside it
    items = [ray.get(ref) for ref in gen]
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Concatenate, Generic, ParamSpec, Sequence, TypeVar

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlft.placement import RolePlan

logger = logging.getLogger(__name__)

DEAD_PEER_GRACE_S = 5.0
"""After one rank's call raised, how long ``gather`` looks for a dead rank behind it."""

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
    """A worker of a group died (crashed, was killed, or its node went away) and is not coming back
    (``max_restarts=0``, no restarts left, or it did not come back within the restart timeout)."""

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
        resources: dict[str, float] | None = None,
        strategy: str = "PACK",
        placement: SharedPlacement | None = None,
        max_restarts: int = 0,
        restart_timeout_s: float = 600.0,
        env_vars: dict[str, str] | None = None,
        placement_timeout_s: float = 120.0,
        start: bool = True,
        concurrency_groups: dict[str, int] | None = None,
    ):
        """Reserve the placement group and, with ``start``, create the actors: ``args(rank)`` gives
        each rank's constructor ``(args, kwargs)``. With ``start=False`` call ``start(args)`` later,
        e.g. once a rendezvous address has been found on bundle 0's node.

        ``max_restarts``: how many times Ray may restart each actor (``call_each_retrying`` then
        re-issues what was lost); ``restart_timeout_s``: how long to wait for a restarted actor's
        constructor (a vLLM engine takes tens of seconds) before giving up with ``WorkerDiedError``.

        ``resources``: custom Ray resources each worker reserves (``{"node_b": 0.01}`` keeps the
        role on nodes advertising ``node_b``). ``placement``: run in bundles of a placement group
        reserved by someone else (``SharedPlacement``; colocated roles), which this group does not
        remove on shutdown.

        ``concurrency_groups``: Ray concurrency groups (name -> threads) the actors are created
        with, for ``call_in_group``; the default group keeps one thread."""
        if n < 1:
            raise ValueError(f"a {role} group needs at least 1 worker, got {n}")
        if num_cpus <= 0 and num_gpus <= 0 and not resources:
            raise ValueError(f"{role} workers must reserve some CPU, GPU or custom resource")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.role, self.cls, self.n = role, cls, n
        resources = dict(resources or {})
        if placement is None:
            bundle = {**({"CPU": num_cpus} if num_cpus > 0 else {}), **({"GPU": num_gpus} if num_gpus > 0 else {}),
                      **resources}
            self._pg = reserve([dict(bundle) for _ in range(n)], strategy, role, placement_timeout_s)
            self._bundle_index, self._owns_pg = list(range(n)), True
        else:
            if len(placement.bundle_indices) < n:
                raise ValueError(f"{n} {role} workers for {len(placement.bundle_indices)} shared bundles")
            self._pg, self._bundle_index, self._owns_pg = placement.group, list(placement.bundle_indices), False
        # Ray never re-runs a lost call (max_task_retries=0): call_each_retrying re-issues it, so
        # rlft knows what was lost and can restore a restarted actor's state first.
        self._options = dict(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=0,
            **({"resources": resources} if resources else {}),
        )
        self.max_restarts, self.restart_timeout_s = max_restarts, restart_timeout_s
        self.restarts_by_rank = [0] * n  # restarts seen (and recovered from) per rank
        self._incarnations: list[str | None] = [None] * n  # Ray worker id of each rank's actor
        self._env_vars = env_vars
        self._concurrency_groups = dict(concurrency_groups or {})
        self._actors: list[Any] = []
        if start:
            self.start(args)

    @classmethod
    def from_plan(
        cls, role: RolePlan, worker_cls: type[T], *, placement: SharedPlacement | None = None, **options: Any
    ) -> WorkerGroup[T]:
        """The workers of ``role`` as ``rlft.placement.plan_run`` planned them (the one place a role's
        placement is computed): ``role.count`` of ``worker_cls``, each reserving ``role.reserves``,
        in a placement group of their own with ``role.strategy``, or in ``placement``'s bundles
        when the plan shares the role's group with another role. ``options``: the constructor's other
        keyword arguments (``args``, ``max_restarts``, ``start``, ...)."""
        each = dict(role.reserves)
        return cls(role.role, worker_cls, role.count, num_cpus=each.pop("CPU", 0.0), num_gpus=each.pop("GPU", 0.0),
                   resources=each, strategy=role.strategy, placement=placement, **options)

    @property
    def placement_group(self) -> Any:
        """The group's placement group (bundle ``i`` hosts rank ``i``)."""
        return self._pg

    def start(self, args: ArgsFn | None = None) -> None:
        """Create one actor per bundle; ``args(rank)`` gives its constructor arguments."""
        if self._actors:
            raise RuntimeError(f"the {self.role} group is already started")
        # concurrency groups belong to the class (Ray rejects them in .options())
        if self._concurrency_groups:
            remote_cls = ray.remote(concurrency_groups=dict(self._concurrency_groups))(self.cls)
        else:
            remote_cls = ray.remote(self.cls)
        args = args or (lambda rank: ((), {}))
        for rank in range(self.n):
            a, kw = args(rank)
            options: dict[str, Any] = {
                **self._options,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=self._bundle_index[rank]
                ),
            }
            if self._env_vars:
                options["runtime_env"] = {"env_vars": dict(self._env_vars)}
            self._actors.append(create_named(remote_cls, options, f"{self.role}-{rank}", a, kw))

    @property
    def bundle_indices(self) -> list[int]:
        """The placement-group bundle of each rank."""
        return list(self._bundle_index)

    @property
    def actors(self) -> list[Any]:
        """The actor handles, by rank."""
        return list(self._actors)

    def rendezvous(self) -> tuple[str, int]:
        """An address and a TCP port free right now on the node of rank 0's bundle: where a
        torch.distributed group of these ranks meets (call before ``start``)."""
        return ray.get(
            _free_port.options(
                num_cpus=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=self._bundle_index[0]
                ),
            ).remote()
        )

    def close_and_shutdown(self, close: Callable[..., Any]) -> None:
        """Let every live worker release what it holds (``close``: a process group, reward
        processes), then kill them all and free the placement group; a dead worker has nothing to
        close."""
        try:
            self.call(close)
        except WorkerDiedError:
            pass
        finally:
            self.shutdown()

    def nodes(self) -> list[dict[str, Any]]:
        """Where each rank runs: ``{"rank", "node_id", "node_ip"}`` by rank (asked of the actors)."""
        refs = [actor.__ray_call__.remote(_node_of) for actor in self._actors]
        return [{"rank": rank, **where} for rank, where in enumerate(ray.get(refs))]

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

    def stream(
        self, rank: int, method: Callable[Concatenate[T, P], Any], *args: P.args, **kwargs: P.kwargs
    ) -> ray.ObjectRefGenerator:
        """Call the generator ``method`` on rank ``rank``; Ray's ``ObjectRefGenerator`` of the items
        it yields, each available as soon as it is yielded (``num_returns="streaming"``). A dead
        worker surfaces as ``RayActorError`` from the generator (no restart handling here)."""
        name = self._name(method)
        return getattr(self._actors[rank], name).options(num_returns="streaming").remote(*args, **kwargs)

    def submit_in_group(
        self, group_name: str, method: Callable[Concatenate[T, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> list[ray.ObjectRef]:
        """Like ``submit``, run in the workers' concurrency group ``group_name`` (one given to the
        constructor): it does not wait behind the calls of the default group."""
        if group_name not in self._concurrency_groups:
            raise ValueError(
                f"the {self.role} group has no concurrency group {group_name!r}; "
                f"it was created with {sorted(self._concurrency_groups) or 'none'}"
            )
        name = self._name(method)
        return [
            getattr(actor, name).options(concurrency_group=group_name).remote(*args, **kwargs)
            for actor in self._actors
        ]

    def call_in_group(
        self, group_name: str, method: Callable[Concatenate[T, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> list[R]:
        """Like ``call``, run in the workers' concurrency group ``group_name``; results by rank."""
        return self.gather(self.submit_in_group(group_name, method, *args, **kwargs))

    def gather(self, refs: Sequence[ray.ObjectRef], timeout_s: float | None = None) -> list[Any]:
        """Wait for ``refs`` (one per rank); results by rank. The first failure raises at once, in
        the order the calls finish: a dead worker as ``WorkerDiedError`` (so a dead learner rank
        surfaces while its peers still block in a collective waiting for it), an exception raised
        by the method as itself. ``timeout_s`` bounds the whole wait (``GetTimeoutError``)."""
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        pending, results = list(refs), {}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not ready:
                raise GetTimeoutError(
                    f"{len(pending)} of {len(refs)} {self.role} call(s) not done within {timeout_s:g} s"
                )
            rank = rank_of[ready[0]]
            try:
                results[rank] = ray.get(ready[0])
            except Exception as err:
                if isinstance(err, RayActorError) and not _raised_by_method(err):
                    raise WorkerDiedError(self.role, rank, err) from err
                # A peer's death often shows first as this rank's failed collective: prefer the
                # root cause when another rank turns out dead within a short grace.
                self._raise_dead_rank(pending, rank_of, cause=err)
                raise
        return [results[rank] for rank in range(len(refs))]

    def _raise_dead_rank(
        self, pending: list[ray.ObjectRef], rank_of: dict[ray.ObjectRef, int], cause: BaseException
    ) -> None:
        if not pending:
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=DEAD_PEER_GRACE_S)
        for ref in sorted(ready, key=rank_of.__getitem__):
            try:
                ray.get(ref)
            except RayActorError as err:
                if not _raised_by_method(err):
                    raise WorkerDiedError(self.role, rank_of[ref], err) from cause
            except Exception:
                pass

    # ------------------------------------------------------------------ restarts

    @property
    def restarts(self) -> int:
        """Actor restarts this group has recovered from, over all ranks."""
        return sum(self.restarts_by_rank)

    def call_each_retrying(
        self,
        method: Callable[Concatenate[T, P], R],
        per_rank: Sequence[tuple[Any, ...]],
        *,
        on_restart: Callable[[int], Any] | None = None,
        **common: Any,
    ) -> list[R]:
        """``call_each`` that survives restarted workers: a rank whose actor died (during this call,
        or since this group last saw it) is waited for until Ray has restarted it, handed to
        ``on_restart(rank)`` to restore its state, counted, and its call alone re-issued with the
        same arguments; the other ranks' calls run on undisturbed. Results by rank.

        The method must be safe to run again (a lost call may have run partly). Raises
        ``WorkerDiedError`` for a worker that is dead for good (``max_restarts=0``, no restarts
        left, its constructor failed, or not back within ``restart_timeout_s``)."""
        if len(per_rank) != self.n:
            raise ValueError(f"{len(per_rank)} argument sets for {self.n} {self.role} workers")
        name = self._name(method)
        watch = self.max_restarts > 0  # without restarts, nothing to watch: a death is final
        calls: dict[int, tuple[ray.ObjectRef | None, ray.ObjectRef]] = {}

        def issue(rank: int) -> None:
            actor = self._actors[rank]
            # Calls from one caller run in order on a (non-async) actor: the incarnation query
            # runs right before the call, on the same incarnation unless the call fails too.
            check = actor.__ray_call__.remote(_incarnation) if watch else None
            calls[rank] = (check, getattr(actor, name).remote(*per_rank[rank], **common))

        for rank in range(self.n):
            issue(rank)
        results: dict[int, Any] = {}
        while calls:
            rank_of = {ref: rank for rank, (_, ref) in calls.items()}
            ready, _ = ray.wait(list(rank_of), num_returns=1)
            rank = rank_of[ready[0]]
            check, ref = calls.pop(rank)
            lost = self._restarted_since_seen(rank, check) if check is not None else None
            if lost is None:
                try:
                    results[rank] = ray.get(ref)
                    continue
                except RayActorError as err:
                    if _raised_by_method(err):
                        raise
                    lost = err
            self._recover(rank, lost, on_restart)
            issue(rank)
        return [results[rank] for rank in range(self.n)]

    def recover(self, on_restart: Callable[[int], Any] | None = None) -> list[int]:
        """Find the ranks whose actor died or was restarted since this group last saw it, wait for
        them to be back, restore each with ``on_restart(rank)`` and count it; the restarted ranks.
        For a caller whose own call failed because of a worker (e.g. a weight push whose target
        engine died), to tell a restart it can recover from from a worker dead for good
        (``WorkerDiedError``)."""
        checks = [actor.__ray_call__.remote(_incarnation) for actor in self._actors]
        restarted = []
        for rank, check in enumerate(checks):
            lost = self._restarted_since_seen(rank, check)
            if lost is not None and self._recover(rank, lost, on_restart):
                restarted.append(rank)
        return restarted

    def _restarted_since_seen(self, rank: int, check: ray.ObjectRef) -> BaseException | None:
        """Why rank ``rank`` must be recovered (its incarnation query failed, or answered with a new
        incarnation), or None when it is the actor this group saw last (or the first one seen)."""
        try:
            incarnation = ray.get(check)
        except RayActorError as err:
            return err
        seen = self._incarnations[rank]
        if seen is None:
            self._incarnations[rank] = incarnation
            return None
        if incarnation != seen:
            return RuntimeError(f"{self.role} worker rank {rank} was restarted between calls")
        return None

    def _recover(self, rank: int, cause: BaseException, on_restart: Callable[[int], Any] | None) -> bool:
        """Wait until rank ``rank``'s actor answers; when it is a new incarnation, count it and run
        ``on_restart(rank)`` (again, if the actor dies while being restored). False when the same
        actor answers (a transient failure: nothing was restarted)."""
        if self.max_restarts == 0:
            raise WorkerDiedError(self.role, rank, cause)
        restarted = False
        while True:
            incarnation = self._await_alive(rank, cause)
            if incarnation == self._incarnations[rank]:
                return restarted
            self._incarnations[rank] = incarnation
            self.restarts_by_rank[rank] += 1
            restarted = True
            logger.warning(
                "%s worker rank %d was restarted (%d restart(s) of this group so far): %s",
                self.role, rank, self.restarts, _first_line(cause),
            )
            if on_restart is None:
                return True
            try:
                on_restart(rank)
                return True
            except Exception as err:  # the actor died again while being restored: go round again
                again = self._actors[rank].__ray_call__.remote(_incarnation)
                if self._restarted_since_seen(rank, again) is None:
                    raise
                cause = err

    def _await_alive(self, rank: int, cause: BaseException) -> str:
        """The incarnation of rank ``rank``'s actor once it answers again (Ray restarts it and runs
        its constructor, tens of seconds for a vLLM engine)."""
        actor, ref = self._actors[rank], None
        deadline = time.monotonic() + self.restart_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if ref is None:
                ref = actor.__ray_call__.remote(_incarnation)
            try:
                return ray.get(ref, timeout=min(left, 5.0))
            except GetTimeoutError:  # queued behind the constructor: keep waiting for this query
                continue
            except ActorDiedError as err:  # dead for good: no restarts left, or its constructor failed
                raise WorkerDiedError(self.role, rank, err) from cause
            except RayActorError:  # restarting: its queries fail until it is back
                ref = None
                time.sleep(0.2)
        raise WorkerDiedError(
            self.role,
            rank,
            TimeoutError(f"not back {self.restart_timeout_s:g} s after it died ({_first_line(cause)})"),
        ) from cause

    def _name(self, method: Callable[..., Any]) -> str:
        name = getattr(method, "__name__", None)
        if name is None or getattr(self.cls, name, None) is not method:
            raise TypeError(
                f"{method!r} is not a method of {self.cls.__name__}; pass it as {self.cls.__name__}.<method>"
            )
        return name

    def kill(self, rank: int, no_restart: bool = True, wait_s: float = 60.0) -> None:
        """Kill one worker (tests and fault drills). ``ray.kill`` only asks, so this returns once the
        kill has taken effect and the next call can never reach the old actor: with ``no_restart``,
        once the actor is gone; without, once Ray's restarted copy (a new incarnation) answers."""
        actor = self._actors[rank]
        before = ray.get(actor.__ray_call__.remote(_incarnation)) if not no_restart else None
        ray.kill(actor, no_restart=no_restart)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                now = ray.get(actor.__ray_call__.remote(_incarnation), timeout=5)
            except RayActorError:
                if no_restart:
                    return
                now = before  # dying or restarting: ask again
            except GetTimeoutError:
                continue
            if not no_restart and now != before:
                return
            time.sleep(0.05)
        state = "still answers" if no_restart else "has not come back as a new actor"
        raise RuntimeError(f"{self.role} worker rank {rank} {state} {wait_s:g} s after being killed")

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
        if self._pg is not None and self._owns_pg:
            remove_placement_group(self._pg)
        self._pg = None

    def __enter__(self) -> WorkerGroup[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class SharedPlacement:
    """Bundles of a placement group reserved once and shared by several roles (colocation): rank
    ``i`` of a group created with it runs in bundle ``bundle_indices[i]``."""

    def __init__(self, group: Any, bundle_indices: Sequence[int]):
        self.group, self.bundle_indices = group, list(bundle_indices)


def reserve(bundles: list[dict[str, float]], strategy: str, what: str, timeout_s: float = 120.0) -> Any:
    """A ready placement group of ``bundles``; ``PlacementError`` (the group released) when the
    cluster cannot host it within ``timeout_s``."""
    pg = placement_group(bundles, strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except GetTimeoutError:
        remove_placement_group(pg)
        raise PlacementError(
            f"cannot place {len(bundles)} {what} worker(s) of {bundles[0]} with strategy {strategy} within "
            f"{timeout_s:.0f} s; the cluster has {ray.available_resources()} available "
            f"(rlft plan CONFIG --address ... shows what the config asks for)"
        ) from None
    return pg


@ray.remote
def _free_port() -> tuple[str, int]:
    """The node's IP and a TCP port that is free on it right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def _node_of(_self: Any) -> dict[str, str]:
    """Run on an actor (``__ray_call__``): the node it runs on."""
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def _incarnation(_self: Any) -> str:
    """Run on an actor (``__ray_call__``): its Ray worker id, new with every restart."""
    return ray.get_runtime_context().get_worker_id()


def _raised_by_method(err: RayActorError) -> bool:
    """True for an exception raised by the called method itself (Ray wraps it in a ``RayTaskError``
    that also subclasses the cause's type, e.g. the method's own call to another, dead actor)."""
    return isinstance(err, RayTaskError)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"
