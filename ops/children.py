"""Worker child processes: how drains and the always-on supervisor start them,
and how a child sets itself up.

A child is `python -m <module> ... --report-fd N --parent-pid P`: it reports on
a pipe (one line per event, see ops/drain_worker.py), dies with its parent, and
sends its Redis commands through a metered client whose counts the parent
books (the child records no usage itself, or they would be billed twice).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from typing import IO, Any

from django.conf import settings

# Linux prctl option: deliver this signal when the parent dies.
_PR_SET_PDEATHSIG = 1


def spawn(module: str, args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start a child; returns it and the read end of its report pipe."""
    reader, writer = os.pipe()
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")
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
            ],
            pass_fds=(writer,),
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


def bootstrap(parent_pid: int, report_fd: int, source: str) -> tuple[IO[str], Any, Any]:
    """In the child: (report stream, meter, Redis client), Django set up."""
    die_with_parent(parent_pid)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaireon.settings")
    import django

    django.setup()
    from ops.redis_client import CommandMeter, make_client

    report = os.fdopen(report_fd, "w", buffering=1)
    meter = CommandMeter(source, record_usage=False)
    return report, meter, make_client(meter)


def worker_kwargs() -> dict[str, Any]:
    # prepare_for_work would send CLIENT SETNAME + CLIENT LIST to learn an IP
    # address RQ only displays: two commands per process for nothing.
    return {"prepare_for_work": False}


def identify(worker: Any) -> None:
    """What prepare_for_work would have set, without asking Redis."""
    worker.hostname = socket.gethostname()
    worker.pid = os.getpid()
    worker.ip_address = "unknown"
