"""``percpu exporter``: serve the syscall counts to Prometheus."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _machine
from ..errors import PercpuError
from . import _disturbances, _options
from ._args import int_at_least

if TYPE_CHECKING:
    from ..exporter import Family

__all__ = ["register"]


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9435``, ``[::1]:9435``, ``0.0.0.0:9435`` or ``:9435`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give ADDRESS:PORT, e.g. 127.0.0.1:9435 or [::1]:9435")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _seconds(text: str) -> float:
    """``10``, ``10s``, ``500ms`` or ``1m``."""
    t = text.strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], factor
            break
    try:
        value = float(t) * scale
    except ValueError:
        value = -1.0
    if not 0 <= value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration such as 10s or 500ms")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return value


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PercpuError(f"cannot listen on {host}:{port}: the port is in use") from exc
        raise PercpuError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _started_as_exporter() -> bool:
    """This process is `percpu exporter ...` itself (not the exporter run in-process by other code) and
    was not restarted yet: only then may it replace itself."""
    if "PERCPU_REEXEC" in os.environ or len(sys.argv) < 2 or sys.argv[1] != "exporter":
        return False
    main_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "__main__.py")
    return os.path.basename(sys.argv[0]) == "percpu" or os.path.abspath(sys.argv[0]) == main_py


def _cmd_exporter(args: argparse.Namespace) -> int:
    from .._privileges import caps_needed_to_read_maps, drop_privileges, resolve_user
    from .._web import Limits, MetricsServer
    from .._webconfig import WebConfig, load_web_config
    from ..exporter import SyscallCollector

    host, port = args.listen
    user, _, group = (args.user or "").partition(":")
    resolve_user(user or None, group or None)  # a wrong name is reported before anything is loaded
    if not args.keep_privileges and _machine.current().threads() > 1 and _started_as_exporter():
        # Capabilities belong to threads, and numpy's BLAS starts a pool of them at import that could not
        # be made to drop theirs; percpu needs no BLAS: start again with the pool at one thread.
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PERCPU_REEXEC="1")
        os.execve(sys.executable, [sys.executable, "-m", "percpu", *sys.argv[1:]], env)
    web = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
    # Exited processes (and tasks) are summed by name at once: the exporter's series have no pid.
    counter = _options.counter(args, _options.filters(args), proc_keep=0)
    args.task_keep = 0
    disturb = _disturbances.session(args)  # a bad -E fails here, before anything is loaded
    # Bind before loading anything: a port in use is reported without touching the kernel (and a port
    # below 1024 is bound while the capability to do so is still there).
    sock = _bind(host, port)
    stats_fd: int | None = None
    try:
        with counter:
            families = _disturb_families(args, disturb)
            lib = _machine.current().libbpf()
            stats_fd = _enable_stats(lib) if args.enable_bpf_stats else None
            limits = Limits(
                max_connections=args.web_max_connections,
                max_requests=args.web_max_requests,
                request_timeout=args.web_request_timeout,
                share_window=args.web_share_window,
            )
            server_ref: list[MetricsServer] = []
            collector = SyscallCollector(
                counter,
                cpu_label="none" if args.no_cpu_label else args.cpu_label,
                top_syscalls=args.top_syscalls,
                max_comms=args.max_comms,
                libbpf_version=lib.version_string,
                bpf_stats=stats_fd is not None,
                extra=lambda: families() + (server_ref[0].families() if server_ref else []),
            )
            privileges = "kept (--keep-privileges)"
            if not args.keep_privileges:
                # The programs are attached and every fd is open: nothing needs privileges from here on
                # (on kernels that allow reading maps without them, see percpu._privileges).
                dropped = drop_privileges(caps_needed_to_read_maps(), user or None, group or None)
                privileges = f"dropped (uid {dropped.uid}, capabilities kept {dropped.kept:#x})"
            try:
                collector.scrape()  # the first read fails here, with a message, rather than in a request
            except PercpuError as exc:
                if args.keep_privileges:
                    raise
                raise PercpuError(
                    f"reading the maps after giving up privileges failed ({exc}): this kernel may need "
                    "CAP_BPF to read them; run with --keep-privileges and report the kernel version"
                ) from exc
            server = MetricsServer(sock, collector.scrape, limits, web)
            server_ref.append(server)
            scheme = "https" if web.ssl_context else "http"
            shown = f"[{host}]" if ":" in host else host
            print(
                f"percpu exporter: {scheme}://{shown}:{port}/metrics (attach {counter.attach_mode}; "
                f"privileges {privileges})",
                file=sys.stderr,
                flush=True,
            )
            try:
                server.serve()
            finally:
                if stats_fd is not None:
                    os.close(stats_fd)
    finally:
        sock.close()
        if disturb is not None:
            disturb.close()
    return 0


def _enable_stats(lib: Any) -> int:
    """The fd that keeps the kernel's BPF run-time stats on while it is open (--enable-bpf-stats)."""
    try:
        fd: int = lib.enable_stats()
    except OSError as exc:
        raise PercpuError(f"--enable-bpf-stats: {exc.strerror}") from exc
    return fd


def _disturb_families(
    args: argparse.Namespace, disturb: _disturbances.DisturbSession | None
) -> Callable[[], list[Family]]:
    """Attach the disturbance counter (-I -V -S -T) beside the syscall counter and return what adds its
    families to each scrape; what this kernel cannot count is said on stderr now and served as
    ``percpu_disturb_unsupported_info``."""
    if disturb is None:
        return list
    from ..exporter import DisturbCollector

    disturb.start()
    for c in disturb.run_caveats():
        print(f"percpu exporter: warning: {c.text}", file=sys.stderr, flush=True)
    collector = DisturbCollector(
        disturb,
        cpu_label="none" if args.no_cpu_label else args.cpu_label,
        max_comms=args.max_comms,
    )
    return collector.families


def register(sub: Any) -> None:
    p = sub.add_parser(
        "exporter",
        help="serve per-CPU syscall counts to Prometheus (default 127.0.0.1:9435)",
        description="Serve Prometheus / OpenMetrics metrics of system calls per CPU. Counters are never "
        "reset; "
        "each scrape reads the BPF maps once with batch reads.",
    )
    p.add_argument(
        "--listen",
        "--web.listen-address",
        dest="listen",
        type=parse_listen,
        default=("127.0.0.1", 9435),
        metavar="ADDR:PORT",
        help="address and port (default 127.0.0.1:9435; [::1]:9435 and 0.0.0.0:9435 work too)",
    )
    _add_serving_options(p.add_argument_group("serving"))
    _add_metric_options(p)
    _options.add_counter_options(p, disturb=True)

    def run(args: argparse.Namespace) -> int:
        # -s is shared with `percpu top/stat`; an all-empty list (-s ,,) would load a filter that counts
        # nothing, and an exporter that serves zeros forever looks healthy: refuse it here.
        if args.syscall is not None and not [n for s in args.syscall for n in s.split(",") if n.strip()]:
            p.error("-s/--syscall: no syscall names given (e.g. -s read,write)")
        return _cmd_exporter(args)

    p.set_defaults(func=run)


def _add_serving_options(w: Any) -> None:
    """How the metrics are served: TLS and auth, limits, and whom the process runs as once attached."""
    w.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth in the web configuration format of Prometheus' exporter-toolkit "
        "(needs percpu[web])",
    )
    w.add_argument(
        "--web.max-requests",
        dest="web_max_requests",
        type=int_at_least(0),
        default=40,
        metavar="N",
        help="requests answered at once; more get 503 (default 40, 0: no limit)",
    )
    w.add_argument(
        "--web.max-connections",
        dest="web_max_connections",
        type=int_at_least(1),
        default=512,
        metavar="N",
        help="connections open at once; more are closed at once (default 512)",
    )
    w.add_argument(
        "--web.request-timeout",
        dest="web_request_timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="DURATION",
        help="whole-request deadline, from its first byte to the last byte of the answer (default 10s)",
    )
    w.add_argument(
        "--web.share-window",
        dest="web_share_window",
        type=_seconds,
        default=0.0,
        metavar="DURATION",
        help="requests within this time after a scrape get that scrape too (default 0: only requests that "
        "arrive while a scrape is being taken share it)",
    )
    w.add_argument(
        "--user",
        metavar="USER[:GROUP]",
        help="after attaching, run as this user (and group); needs CAP_SETUID/CAP_SETGID at start",
    )
    w.add_argument(
        "--keep-privileges",
        action="store_true",
        help="do not drop capabilities after attaching (for debugging)",
    )


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    """What the metrics hold: their labels, how many syscalls and command names get series of their own,
    and program run stats."""
    p.add_argument(
        "--no-cpu-label", action="store_true", help="sum over CPUs (fewer series); = --cpu-label none"
    )
    p.add_argument(
        "--cpu-label",
        choices=("cpu", "core", "package", "node", "none"),
        default="cpu",
        help="label the syscall counts by cpu (default), core, package or node (summed, from sysfs topology "
        "read at start; the label is then named core/package/node), or none: fewer series on big machines",
    )
    p.add_argument(
        "--top-syscalls",
        type=int_at_least(1),
        default=0,
        metavar="N",
        help='name the N busiest syscalls, the rest as syscall="other"; a syscall that gets busy later is '
        "named too, up to 2N in all (default: name all)",
    )
    p.add_argument(
        "--max-comms",
        type=int_at_least(1),
        default=20,
        metavar="K",
        help="with --per-process: at most K command names (default 20): half go to names as they appear, "
        "the busiest first, half to names among the K/2 busiest since the previous scrape; a name keeps "
        'its series; the rest are comm="other"',
    )
    p.add_argument(
        "--enable-bpf-stats",
        action="store_true",
        help="turn on kernel BPF run-time stats while running (program run count and time are only "
        "counted while stats are on)",
    )
