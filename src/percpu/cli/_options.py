"""The options every counting command shares (``stat``, ``top``, ``export``) and what they become: the
in-kernel :class:`~percpu.syscount.Filters` and a :class:`~percpu.syscount.SyscallCounter`."""

from __future__ import annotations

import argparse

from .. import _machine, process
from .._privileges import privilege_hint
from ..errors import PercpuError
from ..syscount import ATTACH_MODES, MAX_TABLE_ENTRIES, Filters, SyscallCounter, pid_namespace
from . import _disturbances
from ._args import int_at_least, seconds

__all__ = ["MIN_INTERVAL", "add_counter_options", "counter", "filters", "interval", "require_root"]

# ``-i/--interval`` of stat and top. Each report reads every map: a shorter interval would spend a CPU on
# reading, not on the workload.
MIN_INTERVAL = 0.1
interval = seconds(MIN_INTERVAL, " (each report reads every map)")


def add_counter_options(p: argparse.ArgumentParser, *, disturb: bool = False) -> None:
    """The counting options; ``disturb`` adds the disturbance dimensions (-I -V -S -T -D -E) to the opt-in
    ones."""
    g = p.add_argument_group("what to count (filters run in the kernel, set before load)")
    g.add_argument("-p", "--pid", type=int, help="only this process (thread group id)")
    g.add_argument("-t", "--tid", type=int, help="only this thread")
    g.add_argument(
        "-c", "--comm", help="only tasks with this command name (the kernel keeps its first 15 bytes)"
    )
    g.add_argument("--cgroup", help="only tasks in this cgroup v2 (path under /sys/fs/cgroup, or its id)")
    g.add_argument(
        "-s",
        "--syscall",
        action="append",
        metavar="NAME",
        help="only these system calls (repeat, or comma-separated: -s read,write)",
    )
    g.add_argument("-x", "--failed", action="store_true", help="only calls that failed (returned an error)")
    m = p.add_argument_group("opt-in dimensions")
    m.add_argument("-P", "--per-process", action="store_true", help="also count per process (pid, comm)")
    m.add_argument("-e", "--errors", action="store_true", help="also count failures by errno")
    m.add_argument("-L", "--latency", action="store_true", help="also record log2 latency histograms")
    m.add_argument(
        "--proc-entries",
        type=int_at_least(1, maximum=MAX_TABLE_ENTRIES),
        default=10240,
        metavar="N",
        help="with -P: (process, syscall) pairs the kernel table holds (default 10240); exited processes "
        "are taken out while counting (kept by pid up to N rows, then summed by name); calls beyond are lost",
    )
    m.add_argument(
        "--errors-entries",
        type=int_at_least(1, maximum=MAX_TABLE_ENTRIES),
        default=8192,
        metavar="N",
        help="with -e: (syscall, errno) pairs the table holds (default 8192); calls beyond are lost",
    )
    m.add_argument(
        "--latency-entries",
        type=int_at_least(1, maximum=MAX_TABLE_ENTRIES),
        default=16384,
        metavar="N",
        help="with -L: (syscall, bucket) pairs beyond the histogram rows (default 16384); more are lost",
    )
    if disturb:
        _disturbances.add_options(m)
    p.add_argument(
        "--attach",
        choices=("auto", *ATTACH_MODES),
        default="auto",
        help="hook to attach at (default auto: tp_btf, then raw_tp, then the classic tracepoint)",
    )


def filters(args: argparse.Namespace, pid: int | None = None, cgroup: int | str | None = None) -> Filters:
    names: list[str] | None = None
    if args.syscall:
        names = [n.strip() for s in args.syscall for n in s.split(",") if n.strip()]
        if not names:
            raise PercpuError("-s/--syscall: no syscall names given (e.g. -s read,write)")
    tgid = pid if pid is not None else args.pid
    if tgid is not None and not _machine.current().task_exists(tgid):
        raise PercpuError(f"no process with pid {tgid}")
    if args.tid is not None and not _machine.current().task_exists(args.tid):
        raise PercpuError(f"no thread with tid {args.tid}")
    if pid_namespace() is not None:
        # The kernel compares pids in percpu's own pid namespace: a task that lives in a namespace
        # nested below it has other pids there and would never match.
        for given, opt in ((tgid, "-p"), (args.tid, "-t")):
            if given is not None and process.in_nested_pid_namespace(given):
                raise PercpuError(
                    f"{opt} {given}: that task runs in a pid namespace nested inside percpu's, where its "
                    f"pid is another: run percpu in that namespace (nsenter -t {given} -p -m), or filter "
                    "by its cgroup (--cgroup) or command name (-c)"
                )
    cg: int | str | None = cgroup if cgroup is not None else args.cgroup
    if isinstance(cg, str) and cg.isdigit():
        cg = int(cg)
    return Filters(
        tgid=tgid, tid=args.tid, comm=args.comm, cgroup=cg, syscalls=names, failed_only=args.failed
    )


def counter(args: argparse.Namespace, filters: Filters, proc_keep: int | None = None) -> SyscallCounter:
    require_root()
    return SyscallCounter(
        filters=filters,
        per_process=args.per_process,
        errors=args.errors,
        latency=args.latency,
        proc_entries=args.proc_entries,
        proc_keep=proc_keep,
        errors_entries=args.errors_entries,
        latency_entries=args.latency_entries,
        attach=args.attach,
        start=False,
    )


def require_root() -> None:
    # Checked up front from the effective capabilities (root in a container may have none): the
    # kernel's EPERM would come later, after work that cannot succeed.
    caps = _machine.current().effective_caps()
    if caps is not None and not _machine.can_load_bpf(caps):
        raise PercpuError(
            "counting system calls loads BPF programs: " + privilege_hint(caps, _machine.current().euid())
        )
