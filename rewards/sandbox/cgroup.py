"""A memory cgroup per jailed program, where this process may create one.

``RLIMIT_AS`` counts a program's mappings, and the jail refuses or bounds what it would not count
(``memfd_create``, ``/dev/shm``, the files and inodes of ``/tmp``). A memory cgroup also counts what
is left: the kernel's own memory on the program's behalf (page tables, pipe buffers, slab) and the
pages of its tmpfs. Where the caller's own memory cgroup is writable (root, or a hierarchy delegated
to the user: cgroup v1's ``memory`` controller or v2 with ``memory`` enabled for children), each
program runs in a fresh child cgroup limited to its address space plus its disk plus a margin; the
kernel's OOM killer ends it (``killed``) at the limit. Elsewhere the jail runs without one and says
so in its description.
"""

from __future__ import annotations

import functools
import os
import time
import uuid

_MARGIN_MB = 64  # the launcher's and init's interpreters, kernel memory
_V1 = "/sys/fs/cgroup/memory"
_V2 = "/sys/fs/cgroup"


@functools.cache
def parent_dir() -> str | None:
    """The directory under which this process may create memory cgroups, or ``None``."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and os.path.isdir(_V1):
            candidate = _V1 + path.rstrip("/")
        elif controllers == "" and os.path.exists(os.path.join(_V2, "cgroup.controllers")):
            candidate = _V2 + path.rstrip("/")
        else:
            continue
        if _usable(candidate):
            return candidate
    return None


def _usable(parent: str) -> bool:
    probe = os.path.join(parent, f"rlft-probe-{uuid.uuid4().hex[:12]}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return _limit_file(probe) is not None
    finally:
        _remove(probe)


def _limit_file(path: str) -> str | None:
    for name in ("memory.max", "memory.limit_in_bytes"):  # v2, v1
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    return None


def create(memory_mb: int, disk_mb: int) -> str | None:
    """A fresh cgroup limited to ``memory_mb + disk_mb`` plus a margin; its ``cgroup.procs`` path
    (the launcher writes its pid there), or ``None`` where no cgroup can be made."""
    parent = parent_dir()
    if parent is None:
        return None
    path = os.path.join(parent, f"rlft-sandbox-{uuid.uuid4().hex[:16]}")
    try:
        os.mkdir(path)
        limit = str((memory_mb + disk_mb + _MARGIN_MB) * 2**20)
        with open(_limit_file(path) or "", "w") as f:
            f.write(limit)
        for swap in ("memory.swap.max", "memory.memsw.limit_in_bytes"):  # no way around it through swap
            if os.path.exists(os.path.join(path, swap)):
                try:
                    with open(os.path.join(path, swap), "w") as f:
                        f.write("0" if swap.endswith(".max") else limit)
                except OSError:
                    pass
    except OSError:
        _remove(path)
        return None
    return os.path.join(path, "cgroup.procs")


def remove(procs: str | None) -> None:
    """Remove the cgroup of ``procs`` once its processes are gone (they were killed already)."""
    if procs is not None:
        _remove(os.path.dirname(procs))


def _remove(path: str) -> None:
    for _ in range(50):  # exiting processes leave the cgroup within milliseconds
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
