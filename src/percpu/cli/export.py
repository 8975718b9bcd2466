"""``percpu exporter``: serve the syscall counts to Prometheus."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..errors import PercpuError
from . import _options
from ._args import int_at_least

__all__ = ["register"]

INDEX = b"""<html><head><title>percpu exporter</title></head><body>
<h1>percpu exporter</h1><p>System calls per CPU, counted by eBPF programs.</p>
<p><a href="/metrics">/metrics</a></p></body></html>
"""


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9435``, ``[::1]:9435``, ``0.0.0.0:9435`` or ``:9435`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give ADDRESS:PORT, e.g. 127.0.0.1:9435 or [::1]:9435")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # a client that stalls mid-request is dropped, not waited on forever

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _cmd_exporter(args: argparse.Namespace) -> int:
    from prometheus_client.exposition import choose_encoder

    from .. import _libbpf
    from ..exporter import SyscallCollector

    host, port = args.listen
    counter = _options.counter(args, _options.filters(args))
    state: dict[str, SyscallCollector] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html")])
            return [INDEX]
        if path != "/metrics" or "collector" not in state:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics\n"]
        # prometheus_client picks OpenMetrics or the text format from the Accept header.
        _encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        body = state["collector"].expose(openmetrics="openmetrics" in content_type)
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    # Bind before loading anything: a port in use is reported without touching the kernel.
    _Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        httpd = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PercpuError(f"cannot listen on {host}:{port}: the port is in use") from exc
        raise PercpuError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    stats_fd: int | None = None
    try:
        with counter:
            lib = _libbpf.libbpf()
            if args.enable_bpf_stats:
                try:
                    stats_fd = lib.enable_stats()
                except OSError as exc:
                    raise PercpuError(f"--enable-bpf-stats: {exc.strerror}") from exc
            state["collector"] = SyscallCollector(
                counter,
                cpu_label=not args.no_cpu_label,
                top_syscalls=args.top_syscalls,
                max_comms=args.max_comms,
                libbpf_version=lib.version_string,
                bpf_stats=stats_fd is not None,
            )
            stop = threading.Event()

            def on_signal(signum: int, frame: Any) -> None:
                stop.set()
                threading.Thread(target=httpd.shutdown, daemon=True).start()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            shown = f"[{host}]" if ":" in host else host
            print(
                f"percpu exporter: http://{shown}:{port}/metrics (attach {counter.attach_mode})",
                file=sys.stderr,
                flush=True,
            )
            try:
                httpd.serve_forever(poll_interval=0.5)
            finally:
                if stats_fd is not None:
                    os.close(stats_fd)
    finally:
        httpd.server_close()
    return 0


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
        type=parse_listen,
        default=("127.0.0.1", 9435),
        metavar="ADDR:PORT",
        help="address and port (default 127.0.0.1:9435; [::1]:9435 and 0.0.0.0:9435 work too)",
    )
    p.add_argument("--no-cpu-label", action="store_true", help="sum over CPUs (fewer series)")
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
        help='with --per-process: at most K command names, the rest as comm="other"',
    )
    p.add_argument(
        "--enable-bpf-stats",
        action="store_true",
        help="turn on kernel BPF run-time stats while running (program run count and time are only "
        "counted while stats are on)",
    )
    _options.add_counter_options(p)

    def run(args: argparse.Namespace) -> int:
        # -s is shared with `percpu top/stat`; an all-empty list (-s ,,) would load a filter that counts
        # nothing, and an exporter that serves zeros forever looks healthy: refuse it here.
        if args.syscall is not None and not [n for s in args.syscall for n in s.split(",") if n.strip()]:
            p.error("-s/--syscall: no syscall names given (e.g. -s read,write)")
        return _cmd_exporter(args)

    p.set_defaults(func=run)
