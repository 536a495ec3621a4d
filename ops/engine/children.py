"""Worker child processes: how drains and the always-on supervisor start them,
and how a child sets itself up.

A child is `python -m <module> ... --report-fd N --parent-pid P`: it reports on
a pipe (one line per event, see ops/engine/drain_worker.py), dies with its parent, and
sends its Redis commands through a metered client whose counts the parent
books (the child records no usage itself, or they would be billed twice).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from django.conf import settings

from ops.logcontext import bind
from ops.logcontext import current as log_fields

# Linux prctl option: deliver this signal when the parent dies.
_PR_SET_PDEATHSIG = 1
# The drain run a spawned child works for: a forked child inherits the log
# context, a spawned one starts empty and reads it here (setup_child), so its
# JSON log lines carry the run id too.
RUN_ID_ENV = "KAIREON_LOG_RUN_ID"


class SharedTally:
    """Two counters (billed, total Redis commands) in shared memory, written by
    a child after every command and read by its parent. The report lines carry
    the same counts, but a job that kills its process takes the last ones with
    it; this copy survives."""

    _FORMAT = "QQ"

    def __init__(self, fd: int | None = None) -> None:
        size = struct.calcsize(self._FORMAT)
        if fd is None:
            fd = os.memfd_create("kaireon-tally", 0)
            os.ftruncate(fd, size)
        self.fd = fd
        self._map = mmap.mmap(fd, size)

    def store(self, billed: int, total: int) -> None:
        struct.pack_into(self._FORMAT, self._map, 0, billed, total)

    def read(self) -> tuple[int, int]:
        billed, total = struct.unpack_from(self._FORMAT, self._map, 0)
        return billed, total

    def close(self) -> None:
        self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def spawn(
    module: str, args: list[str], tally: SharedTally
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a child; returns it and the read end of its report pipe."""
    reader, writer = os.pipe()
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")
    # Never an inherited one: a child outside a run has no run id.
    env.pop(RUN_ID_ENV, None)
    run_id = log_fields().get("run_id")
    if run_id:
        env[RUN_ID_ENV] = run_id
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(settings.BASE_DIR), env.get("PYTHONPATH", "")) if p
    )
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                *args,
                "--report-fd",
                str(writer),
                "--parent-pid",
                str(os.getpid()),
                "--tally-fd",
                str(tally.fd),
            ],
            pass_fds=(writer, tally.fd),
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            # Jobs may print; their output goes to our stderr (the server log),
            # never to our stdout, which `manage.py drain --json` owns.
            stdout=2,
        )
    except BaseException:
        os.close(reader)
        raise
    finally:
        os.close(writer)
    return proc, reader


def child_parser(
    module: str, *, drain: bool = False, always_on: bool = False
) -> argparse.ArgumentParser:
    """The command line every child takes: how it reports to its parent, and
    for a drain's queue worker its queue, deadline and worker name, for an
    always-on worker its queues, worker name and blocking time."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    if drain:
        parser.add_argument("--queue", required=True)
        parser.add_argument(
            "--deadline", type=float, required=True, help="epoch seconds"
        )
        parser.add_argument("--worker-name", required=True)
    if always_on:
        parser.add_argument("--queues", required=True, help="comma-separated")
        parser.add_argument("--worker-name", required=True)
        parser.add_argument("--block-s", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    # Where the parent reads this process's command counts (a private one when
    # run by hand).
    parser.add_argument("--tally-fd", type=int, default=None)
    return parser


def die_with_parent(parent_pid: int) -> None:
    """If the parent dies, this process must not keep running jobs that nobody
    will account for: ask the kernel to kill it with its parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def setup_child(parent_pid: int) -> None:
    """In a spawned child: die with the parent, take the parent's run id
    into the log context, then set Django up."""
    die_with_parent(parent_pid)
    # The child's main context is its own: what it binds lasts its life.
    bind(run_id=os.environ.get(RUN_ID_ENV) or None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")
    import django

    django.setup()


def start_child(args: argparse.Namespace, source: str) -> tuple[IO[str], Any, Any]:
    """In a spawned child, from its parsed command line: die with the parent,
    set Django up, and return (report stream, meter, Redis client)."""
    setup_child(args.parent_pid)
    return child_client(args.report_fd, source, SharedTally(args.tally_fd))


def report_done(report: IO[str], meter: Any) -> None:
    """The last line of every child: the Redis commands it sent in all."""
    report.write(f"done {meter.billed} {meter.total}\n")
    report.flush()


def child_client(
    report_fd: int, source: str, tally: SharedTally
) -> tuple[IO[str], Any, Any]:
    """(report stream, meter, Redis client) of a child process."""
    from ops.usage.redis_client import CommandMeter, make_client

    report = os.fdopen(report_fd, "w", buffering=1)
    meter = CommandMeter(source, record_usage=False, mirror=tally.store)
    return report, meter, make_client(meter)


class ForkedChild:
    """The part of subprocess.Popen the engine uses, for a forked child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _set(self, status: int) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._set(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self._set(status)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def fork(
    target: Callable[[int, SharedTally], int], tally: SharedTally
) -> tuple[ForkedChild, int]:
    """Run `target(report_fd, tally)` in a forked copy of this process.

    Saves the ~0.7 s a fresh interpreter needs to import Django and RQ. Only
    for a single-purpose process such as `manage.py drain` (the web server
    spawns instead): the database connections are closed first so that parent
    and child never share a socket, and the child leaves with os._exit, never
    returning into the parent's code or running its atexit handlers.
    """
    from django.db import connections

    connections.close_all()
    parent_pid = os.getpid()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(reader)
            os.dup2(2, 1)  # jobs' prints go to stderr, never into --json output
            die_with_parent(parent_pid)
            code = target(writer, tally)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(writer)
    return ForkedChild(pid), reader


def worker_kwargs() -> dict[str, Any]:
    # prepare_for_work would send CLIENT SETNAME + CLIENT LIST to learn an IP
    # address RQ only displays: two commands per process for nothing.
    return {"prepare_for_work": False}


def identify(worker: Any) -> None:
    """What prepare_for_work would have set, without asking Redis."""
    worker.hostname = socket.gethostname()
    worker.pid = os.getpid()
    worker.ip_address = "unknown"
