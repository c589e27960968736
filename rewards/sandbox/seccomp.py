"""The seccomp filter of the ``namespaces`` sandbox: a classic-BPF program, built here as bytes.

The filter denies what the namespaces cannot contain or the memory limit cannot count:

- new processes: ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD`` fail with ``EPERM``
  (threads still work); ``clone3`` fails with ``ENOSYS``, because its flags sit in memory a filter
  cannot read, and glibc then falls back to ``clone``;
- sockets of every family (``socket``, ``socketpair``: no network, AF_UNIX included);
- memory no limit counts: ``memfd_create``, ``memfd_secret``, ``userfaultfd``;
- reaching other processes or the kernel: ``ptrace``, ``process_vm_readv``/``writev``,
  ``pidfd_getfd``, ``kcmp``, ``perf_event_open``, ``bpf``, the keyring, ``io_uring`` (its requests
  bypass seccomp), mounts and namespaces (``mount``, ``umount2``, ``pivot_root``, ``chroot``,
  ``unshare``, ``setns``, the new mount API), ``mknod``, file handles, ``personality``, modules,
  ``kexec``, ``reboot``, swap, ``acct``, ``quotactl``.

Any other architecture than the one the filter was built for is killed, and on x86-64 the x32 ABI
(syscall numbers from ``0x40000000``) is refused, so no alternative syscall table slips past.

>>> program = build_filter("x86_64")
>>> len(program) % 8, len(program) // 8 > 40
(0, True)
>>> build_filter("sparc")
Traceback (most recent call last):
...
ValueError: no seccomp syscall table for machine 'sparc' (known: x86_64)
"""

from __future__ import annotations

import errno
import struct

# classic BPF opcodes (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

CLONE_THREAD = 0x00010000
_X32_BIT = 0x40000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # args[0]'s low word (little-endian)

# uname -m -> (AUDIT_ARCH_*, syscall numbers by name)
TABLES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
            "socket": 41, "socketpair": 53,
            "memfd_create": 319, "memfd_secret": 447, "userfaultfd": 323,
            "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
            "kcmp": 312, "perf_event_open": 298, "bpf": 321,
            "add_key": 248, "request_key": 249, "keyctl": 250,
            "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
            "fspick": 433, "mount_setattr": 442,
            "mknod": 133, "mknodat": 259, "name_to_handle_at": 303, "open_by_handle_at": 304,
            "personality": 135, "init_module": 175, "finit_module": 313, "delete_module": 176,
            "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168,
            "acct": 163, "quotactl": 179,
        },
    ),
}  # fmt: skip

_ENOSYS_CALLS = ("clone3",)


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)  # struct sock_filter


def build_filter(machine: str) -> bytes:
    """The filter for ``machine`` (``platform.machine()``) as packed ``struct sock_filter``s, ready
    for ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog)``."""
    if machine not in TABLES:
        raise ValueError(f"no seccomp syscall table for machine {machine!r} (known: {', '.join(TABLES)})")
    arch, numbers = TABLES[machine]
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    out = [
        _insn(_LD_W_ABS, _ARCH),
        _insn(_JEQ_K, arch, jt=1),  # the expected architecture: skip the kill
        _insn(_RET_K, RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _NR),
        _insn(_JGE_K, _X32_BIT, jf=1),  # x32 numbers and above: refused
        _insn(_RET_K, eperm),
    ]
    # clone: allowed for threads only
    out += [
        _insn(_JEQ_K, numbers["clone"], jf=4),
        _insn(_LD_W_ABS, _ARG0_LOW),
        _insn(_JSET_K, CLONE_THREAD, jf=1),
        _insn(_RET_K, RET_ALLOW),
        _insn(_RET_K, eperm),
    ]
    for name, number in sorted(numbers.items(), key=lambda item: item[1]):
        if name == "clone":
            continue
        out += [_insn(_JEQ_K, number, jf=1), _insn(_RET_K, enosys if name in _ENOSYS_CALLS else eperm)]
    out.append(_insn(_RET_K, RET_ALLOW))
    return b"".join(out)


def denied_calls(machine: str) -> list[str]:
    """The names the filter for ``machine`` refuses (``clone`` for anything but a thread).

    >>> "socket" in denied_calls("x86_64") and "memfd_create" in denied_calls("x86_64")
    True
    """
    return sorted(TABLES[machine][1])
