"""Benchmark of the always-on workers (`manage.py work`) against plain `rq worker`.

    .venv/bin/python -m bench.always_on_bench [--minutes 3] [--json]

What an idle always-on pool over the five runbook queues costs in Redis
commands, measured in one run:

1. ours, one worker process for the five queues (`manage.py work --role
   dedicated`) at the default settings: start-up (process start until every
   worker sits in its first blocking pop and the wire is quiet), the steady idle
   commands over a window of --minutes, and shutdown (SIGTERM to the supervisor
   until it exits). A wake-up happens only every ALWAYS_ON_BLOCK_S (default
   3585 s, ~1 h), so the cost of one wake-up is measured in a short run with
   ALWAYS_ON_BLOCK_S=5 and extrapolated to an hour;
2. ours, one process per queue (`--per-queue`): the same;
3. plain `rq worker` (not burst) on the same queues: start-up, the idle window,
   shutdown; a short run with `--worker-ttl 20 --maintenance-interval 12` for
   the cost of a wake-up and of a registry maintenance (extrapolated to an hour
   with RQ's defaults); `rq worker --with-scheduler` for 30 s;
4. the supervisor's scheduled-job scan: with ALWAYS_ON_SCHEDULED_SCAN_S=2, the
   cost of a scan with nothing scheduled, of the scans that find a job
   scheduled 5 s ahead, and of the scan that promotes it.

Each of the four lanes below runs against its own private redis-server
(bench.redis_server.PrivateRedis) behind its own counting proxy
(bench.wire_proxy.WireProxy, here with a time-stamped log per connection) and
its own SQLite database, so the lanes run side by side and the whole run takes
about --minutes + 20 s (at least ~2.5 minutes): lanes A1, A2, A3 hold scenarios
1, 2 and 3's idle windows; lane B runs the short runs one after the other
meanwhile.

Counts as in bench/drain_bench.py: wire (billable: without AUTH/INFO/PING/
QUIT/COMMAND) and server (INFO commandstats delta, probe INFO subtracted).
Everything started here is stopped on the way out, errors and signals included.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from rq import Queue
from rq.defaults import DEFAULT_MAINTENANCE_TASK_INTERVAL, DEFAULT_WORKER_TTL

from bench.drain_bench import (
    FREE_TIER,
    IDLE_TICKS_PER_MONTH,
    PYTHON,
    QUEUES,
    ROOT,
    RQ_CLI,
    UNBILLED,
    Bench,
    Counts,
    _kill_group,
    _live,
    _on_signal,
    check,
    machine_info,
    run_proc,
    stop_live_processes,
    table,
)
from bench.redis_server import PrivateRedis
from bench.wire_proxy import WireProxy

DATE = "2026-11-29"
HOURS_PER_MONTH = 730
TARGET_PER_HOUR = 60  # the issue: at most one command a minute, over an hour
CRON_MINUTES = (1, 5, 15, 30)
CRON_PER_TICK = 1  # `manage.py drain` idle tick, docs/benchmarks.md section 1
SHORT_BLOCK_S = 5  # ALWAYS_ON_BLOCK_S for the per-wake-up runs
SHORT_WINDOW_S = 21.0
RQ_SHORT_TTL = 20  # BLPOP timeout = ttl - 15 = 5 s
RQ_SHORT_MAINT_S = 12  # maintenance at every third 5 s wake-up
RQ_SHORT_WINDOW_S = 31.0
SCHEDULER_WINDOW_S = 30.0
PROMO_SCAN_S = 2
PROMO_AHEAD_S = 5
PROMO_QUEUE = "dsar-jobs"
STARTUP_QUIET_S = 1.5
LULL_S = 0.3
BURST_GAP_S = 0.5
WAIT_TIMEOUT_S = 120.0
# A worker's blocking pop: BLPOP over several queues; RQ 2.12 on a single queue
# moves the job into the queue's intermediate list with BLMOVE.
BLOCKING = frozenset({"BLPOP", "BLMOVE", "BRPOPLPUSH"})
STOP_TIMEOUT_S = 90.0


# --------------------------------------------------------------------------
# A proxy with a log, a lane, processes
# --------------------------------------------------------------------------


class TimedProxy(WireProxy):
    """WireProxy that also logs (time, connection, command) for every command,
    and whose reset() sets a baseline instead of clearing, so that the
    drain bench's Meter can measure phase after phase while the log stays
    whole. One pump thread per client connection: its name is the connection."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.log: list[tuple[float, str, str]] = []
        self._base: Counter[str] = Counter()

    def _record(self, name: str) -> None:
        super()._record(name)
        with self._lock:
            self.log.append((time.monotonic(), threading.current_thread().name, name))

    def reset(self) -> None:
        self._base = super().snapshot()

    def snapshot(self) -> Counter[str]:
        now = super().snapshot()
        now.subtract(self._base)
        return +now

    def events(self, since: float = 0.0, until: float = math.inf) -> list[Any]:
        with self._lock:
            return [e for e in self.log if since <= e[0] < until]

    def last_at(self) -> float:
        with self._lock:
            return self.log[-1][0] if self.log else 0.0


class Lane:
    """One private redis-server, its proxy, a state directory and database."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.server = PrivateRedis()
        self.proxy: TimedProxy | None = None
        self.bench: Bench | None = None
        self.state = root / name
        self.state.mkdir()
        self.db = self.state / "kaireon.sqlite3"

    def start(self) -> Lane:
        self.server.start()
        self.proxy = TimedProxy(self.server.port).start()
        self.bench = Bench(self.server, self.proxy, self.state)
        for key in list(self.bench.env):
            if key.startswith(("ALWAYS_ON_", "METERING_", "WORKER_")):
                del self.bench.env[key]
        return self

    @property
    def env(self) -> dict[str, str]:
        assert self.bench is not None
        return self.bench.env

    @property
    def url(self) -> str:
        assert self.bench is not None
        return self.bench.proxy_url

    @property
    def px(self) -> TimedProxy:
        assert self.proxy is not None
        return self.proxy

    def close(self) -> None:
        if self.bench is not None:
            with contextlib.suppress(Exception):
                self.bench.probe.close()
        if self.proxy is not None:
            self.proxy.close()
        self.server.stop()

    # -- measuring -------------------------------------------------------------

    def begin(self) -> None:
        assert self.bench is not None
        self.bench.meter.begin()

    def end(self) -> Counts:
        assert self.bench is not None
        return self.bench.meter.end()

    def wait_lull(self, quiet: float = LULL_S, timeout: float = 30.0) -> None:
        """Until no command crossed the proxy for `quiet` seconds: phases start
        and end between two wake-ups, never inside one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.px.last_at() < quiet:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the wire never went quiet")
            time.sleep(0.02)


def spawn(lane: Lane, tag: str, argv: list[str], env: dict[str, str]) -> Any:
    out = open(lane.state / f"{tag}.log", "wb")  # noqa: SIM115 - closed in stop()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we can stop it all
    )
    proc.bench_log = out  # type: ignore[attr-defined]
    proc.bench_log_path = lane.state / f"{tag}.log"  # type: ignore[attr-defined]
    _live[proc.pid] = proc
    return proc


def output_of(proc: Any) -> str:
    with contextlib.suppress(OSError):
        return proc.bench_log_path.read_text(errors="replace")[-4000:]
    return ""


def stop(proc: Any) -> tuple[int, float]:
    """SIGTERM to the process itself (not its group: the supervisor stops its
    workers); wait for it to exit; then clear its group in case."""
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        raise RuntimeError(f"{proc.args} did not stop on SIGTERM") from None
    wall = time.perf_counter() - start
    _kill_group(proc)
    _live.pop(proc.pid, None)
    proc.bench_log.close()
    time.sleep(0.3)  # the proxy's threads pass on the last bytes
    return status, wall


def idle_rows(db: Path, supervisor_pid: int) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=2)) as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM ops_workerprocess "
                "WHERE supervisor_pid = ? AND state = 'idle'",
                (supervisor_pid,),
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_started(
    lane: Lane,
    proc: Any,
    since: float,
    blpops: int,
    ready: Callable[[], bool] | None = None,
    quiet: float = STARTUP_QUIET_S,
) -> float:
    """Until `blpops` blocking pops crossed the wire, `ready()` holds and the wire is
    quiet; return the seconds from `since` to the last of them."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{lane.name}: {proc.args} exited with {proc.returncode} "
                f"during start-up:\n{output_of(proc)}"
            )
        seen = [e[0] for e in lane.px.events(since) if e[2] in BLOCKING]
        if (
            len(seen) >= blpops
            and (ready is None or ready())
            and time.monotonic() - lane.px.last_at() >= quiet
        ):
            return seen[blpops - 1] - since
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{lane.name}: {proc.args} not idle after {WAIT_TIMEOUT_S} s "
                f"({len(seen)} blocking pops seen):\n{output_of(proc)}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Reading the log
# --------------------------------------------------------------------------


def by_connection(events: list[Any]) -> dict[str, list[Any]]:
    conns: dict[str, list[Any]] = {}
    for e in events:
        conns.setdefault(e[1], []).append(e)
    return conns


def wakeups(events: list[Any]) -> list[Counter[str]]:
    """The commands of each wake-up: on each connection that blocks, what it
    sent up to and including each blocking pop since its previous one (or since the
    window began, which is always between two wake-ups)."""
    out: list[Counter[str]] = []
    for conn in by_connection(events).values():
        if not any(e[2] in BLOCKING for e in conn):
            continue
        current: Counter[str] = Counter()
        for _, _, name in conn:
            current[name] += 1
            if name in BLOCKING:
                out.append(current)
                current = Counter()
    return out


def billable(counter: Counter[str] | dict[str, int]) -> int:
    return sum(n for c, n in counter.items() if c not in UNBILLED)


def bursts(events: list[Any], gap: float = BURST_GAP_S) -> list[list[Any]]:
    out: list[list[Any]] = []
    for e in events:
        if out and e[0] - out[-1][-1][0] <= gap:
            out[-1].append(e)
        else:
            out.append([e])
    return out


def fmt_cmds(counter: Counter[str] | dict[str, int]) -> str:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in items) or "nothing"


def phase(label: str, counts: Counts, wall_s: float, **extra: Any) -> dict[str, Any]:
    base = {"label": label, "counts": asdict(counts), "wall_s": round(wall_s, 2)}
    return base | extra


def wake_summary(wakes: list[Counter[str]]) -> dict[str, Any]:
    sizes = [billable(w) for w in wakes]
    total: Counter[str] = Counter()
    for w in wakes:
        total.update(w)
    return {
        "wakeups": len(wakes),
        "billable_each": sizes,
        "per_wakeup": round(sum(sizes) / len(sizes), 3) if sizes else None,
        "by_command_total": dict(total),
    }


# --------------------------------------------------------------------------
# The scenarios
# --------------------------------------------------------------------------


def ours_argv(per_queue: bool) -> list[str]:
    argv = [PYTHON, "manage.py", "work", "--role", "dedicated"]
    return argv + (["--per-queue"] if per_queue else [])


def rq_argv(lane: Lane, *extra: str) -> list[str]:
    return [
        RQ_CLI,
        "worker",
        "-u",
        lane.url,
        "--logging_level",
        "WARNING",
        *extra,
        *QUEUES,
    ]


def ours_idle(lane: Lane, per_queue: bool, minutes: float) -> dict[str, Any]:
    """Scenarios 1 and 2 at the defaults: start-up, idle window, shutdown."""
    n = len(QUEUES) if per_queue else 1
    lane.begin()
    t0 = time.monotonic()
    proc = spawn(lane, "work", ours_argv(per_queue), lane.env)
    ready_s = wait_started(
        lane, proc, t0, n, ready=lambda: idle_rows(lane.db, proc.pid) == n
    )
    startup = lane.end()
    conns = by_connection(lane.px.events(t0))
    out = {
        "processes": n,
        "startup": phase(
            "start-up (spawn -> every worker in its first blocking pop)",
            startup,
            ready_s,
            connections_seen=len(conns),
        ),
    }
    lane.wait_lull()
    w0 = time.monotonic()
    lane.begin()
    time.sleep(minutes * 60)
    lane.wait_lull()
    window = lane.end()
    win_events = lane.px.events(w0)
    out["window"] = phase(
        f"idle window, {minutes:g} min",
        window,
        time.monotonic() - w0,
        wakeups=sum(1 for e in win_events if e[2] in BLOCKING),
        scans=sum(1 for e in win_events if e[2] == "EXISTS"),
    )
    lane.begin()
    status, wall = stop(proc)
    shutdown = lane.end()
    if status != 0:
        raise RuntimeError(f"{lane.name}: supervisor exit {status}:\n{output_of(proc)}")
    out["shutdown"] = phase("shutdown (SIGTERM -> supervisor exits)", shutdown, wall)
    return out


def ours_wakeup(lane: Lane, per_queue: bool) -> dict[str, Any]:
    """Per wake-up: ALWAYS_ON_BLOCK_S=5, scans out of the way (3600 s)."""
    n = len(QUEUES) if per_queue else 1
    env = {
        **lane.env,
        "ALWAYS_ON_BLOCK_S": str(SHORT_BLOCK_S),
        "ALWAYS_ON_SCHEDULED_SCAN_S": "3600",
    }
    t0 = time.monotonic()
    tag = "work-block-pq" if per_queue else "work-block"
    proc = spawn(lane, tag, ours_argv(per_queue), env)
    try:
        wait_started(
            lane,
            proc,
            t0,
            n,
            ready=lambda: idle_rows(lane.db, proc.pid) == n,
            quiet=LULL_S,
        )
        lane.wait_lull()
        w0 = time.monotonic()
        lane.begin()
        time.sleep(SHORT_WINDOW_S)
        lane.wait_lull()
        counts = lane.end()
        wall = time.monotonic() - w0
        wakes = wakeups(lane.px.events(w0))
    finally:
        status, _ = stop(proc)
    if status != 0:
        raise RuntimeError(f"{lane.name}: supervisor exit {status}:\n{output_of(proc)}")
    label = f"ALWAYS_ON_BLOCK_S={SHORT_BLOCK_S}, {SHORT_WINDOW_S:g} s window"
    return phase(label, counts, wall, **wake_summary(wakes))


def rq_idle(lane: Lane, minutes: float) -> dict[str, Any]:
    """Scenario 3 at RQ's defaults: start-up, idle window, shutdown."""
    lane.begin()
    t0 = time.monotonic()
    proc = spawn(lane, "rq", rq_argv(lane), lane.env)
    ready_s = wait_started(lane, proc, t0, 1)
    startup = lane.end()
    out = {
        "startup": phase(
            "start-up (spawn -> first BLPOP)",
            startup,
            ready_s,
            connections_seen=len(by_connection(lane.px.events(t0))),
        )
    }
    lane.wait_lull()
    w0 = time.monotonic()
    lane.begin()
    time.sleep(minutes * 60)
    lane.wait_lull()
    window = lane.end()
    out["window"] = phase(
        f"idle window, {minutes:g} min",
        window,
        time.monotonic() - w0,
        wakeups=sum(1 for e in lane.px.events(w0) if e[2] in BLOCKING),
    )
    lane.begin()
    status, wall = stop(proc)
    shutdown = lane.end()
    out["shutdown"] = phase(
        "shutdown (SIGTERM -> exits)", shutdown, wall, exit_status=status
    )
    return out


def rq_short(lane: Lane) -> dict[str, Any]:
    """Per wake-up and per maintenance: --worker-ttl 20 (BLPOP 5 s),
    --maintenance-interval 12 (maintenance at every third wake-up)."""
    argv = rq_argv(
        lane,
        "--worker-ttl",
        str(RQ_SHORT_TTL),
        "--maintenance-interval",
        str(RQ_SHORT_MAINT_S),
    )
    t0 = time.monotonic()
    proc = spawn(lane, "rq-short", argv, lane.env)
    try:
        wait_started(lane, proc, t0, 1, quiet=LULL_S)
        lane.wait_lull()
        w0 = time.monotonic()
        lane.begin()
        time.sleep(RQ_SHORT_WINDOW_S)
        lane.wait_lull()
        counts = lane.end()
        wall = time.monotonic() - w0
        wakes = wakeups(lane.px.events(w0))
    finally:
        stop(proc)
    if not wakes:
        raise RuntimeError(f"{lane.name}: rq worker never woke up in the window")
    base = min(wakes, key=billable)
    maint = [w - base for w in wakes if billable(w) > billable(base)]
    label = (
        f"--worker-ttl {RQ_SHORT_TTL} --maintenance-interval {RQ_SHORT_MAINT_S}, "
        f"{RQ_SHORT_WINDOW_S:g} s window"
    )
    return phase(
        label,
        counts,
        wall,
        **wake_summary(wakes),
        plain_wakeup=billable(base),
        plain_wakeup_by_command=dict(base),
        maintenances=len(maint),
        maintenance_each=[billable(m) for m in maint],
        maintenance_by_command=dict(maint[0]) if maint else {},
    )


def rq_scheduler(lane: Lane) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = spawn(lane, "rq-sched", rq_argv(lane, "--with-scheduler"), lane.env)
    try:
        wait_started(lane, proc, t0, 1, quiet=0.0)
        time.sleep(3.0)  # the scheduler process starts beside the worker
        w0 = time.monotonic()
        lane.begin()
        time.sleep(SCHEDULER_WINDOW_S)
        counts = lane.end()
        wall = time.monotonic() - w0
    finally:
        stop(proc)
    return phase(
        f"--with-scheduler, {SCHEDULER_WINDOW_S:g} s window",
        counts,
        wall,
        per_minute=round(counts.wire_billable * 60 / wall, 1),
    )


def promotion(lane: Lane) -> dict[str, Any]:
    """Scenario 4: the supervisor's scans with ALWAYS_ON_SCHEDULED_SCAN_S=2,
    one job scheduled PROMO_AHEAD_S ahead on PROMO_QUEUE."""
    assert lane.bench is not None
    env = {**lane.env, "ALWAYS_ON_SCHEDULED_SCAN_S": str(PROMO_SCAN_S)}
    t0 = time.monotonic()
    proc = spawn(lane, "work-promo", ours_argv(False), env)
    try:
        wait_started(
            lane,
            proc,
            t0,
            1,
            ready=lambda: idle_rows(lane.db, proc.pid) == 1,
            quiet=LULL_S,
        )
        time.sleep(2 * PROMO_SCAN_S + 0.5)  # at least two scans with nothing scheduled
        lane.wait_lull()
        # Set-up, straight to redis-server, not measured.
        job = Queue(PROMO_QUEUE, connection=lane.bench.probe).enqueue_in(
            timedelta(seconds=PROMO_AHEAD_S), "ops.jobs.noop"
        )
        scheduled_at = time.monotonic()
        # RQ keeps whole seconds: the job is due at its registry score.
        score = lane.bench.probe.zscore(f"rq:scheduled:{PROMO_QUEUE}", job.id)
        due_in = float(score) - time.time() + (time.monotonic() - scheduled_at)
        lane.begin()
        deadline = scheduled_at + due_in + 30
        # Done when the worker, having taken the job, blocks again (at the
        # defaults its own block does not end before then).
        while True:
            after = [e for e in lane.px.events(scheduled_at) if e[2] in BLOCKING]
            if after:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{lane.name}: the scheduled job never ran")
            time.sleep(0.05)
        time.sleep(PROMO_SCAN_S + 0.5)  # one more scan, nothing scheduled again
        lane.wait_lull()
        window = lane.end()
        window_wall = time.monotonic() - scheduled_at
        events = lane.px.events(t0)
    finally:
        stop(proc)
    status = lane.bench.probe.hget(f"rq:job:{job.id}", "status")
    if status != b"finished":
        raise RuntimeError(f"{lane.name}: scheduled job ended {status!r}")

    conns = by_connection(events)
    worker = {c for c, evs in conns.items() if any(e[2] in BLOCKING for e in evs)}
    sup = [e for e in events if e[1] not in worker]
    scans = []
    for burst in bursts(sup):
        cmds = Counter(e[2] for e in burst)
        at = burst[0][0]
        if "EXEC" in cmds:
            kind = "promoting scan"
        elif at < scheduled_at:
            kind = "nothing scheduled"
        elif "ZRANGEBYSCORE" in cmds or "ZRANGE" in cmds:
            # The scan found the registry non-empty and read its earliest entry.
            kind = "job scheduled, not due"
        else:
            kind = "nothing scheduled"
        scans.append(
            {
                "at_s": round(at - scheduled_at, 2),
                "kind": kind,
                "billable": billable(cmds),
                "by_command": dict(cmds),
            }
        )
    idle = [s for s in scans if s["kind"] == "nothing scheduled"]
    finding = [s for s in scans if s["kind"] == "job scheduled, not due"]
    promoting = [s for s in scans if s["kind"] == "promoting scan"]
    if len(promoting) != 1:
        raise RuntimeError(f"{lane.name}: expected one promoting scan: {scans}")
    promo_at = promoting[0]["at_s"]
    first_find = finding[0]["at_s"] if finding else promo_at
    worker_job = [
        e for e in events if e[1] in worker and e[0] >= scheduled_at + promo_at
    ]
    job_cmds = Counter(e[2] for e in worker_job)
    return {
        "scan_s": PROMO_SCAN_S,
        "ahead_s": PROMO_AHEAD_S,
        "queue": PROMO_QUEUE,
        "scans": scans,
        "idle_scan": sorted({s["billable"] for s in idle}),
        "finding_scans": [s["billable"] for s in finding],
        "promoting_scan": promoting[0],
        "find_to_queued": sum(s["billable"] for s in finding)
        + promoting[0]["billable"],
        "first_find_s": first_find,
        "due_in_s": round(due_in, 2),
        "queued_after_due_s": round(promo_at - due_in, 2),
        "worker_job": {"billable": billable(job_cmds), "by_command": dict(job_cmds)},
        "window": phase(
            "window: scheduling -> job run -> one more scan", window, window_wall
        ),
    }


# --------------------------------------------------------------------------
# Lanes as threads
# --------------------------------------------------------------------------


class Runner(threading.Thread):
    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # re-raised in main
            self.error = exc


def lane_b(lane: Lane, say: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ours_wakeup_one", lambda: ours_wakeup(lane, False)),
        ("ours_wakeup_per_queue", lambda: ours_wakeup(lane, True)),
        ("rq_short", lambda: rq_short(lane)),
        ("rq_scheduler", lambda: rq_scheduler(lane)),
        ("promotion", lambda: promotion(lane)),
    ]
    for key, step in steps:
        assert lane.bench is not None
        lane.bench.flush()
        say(f"B: {key}")
        out[key] = step()
    return out


# --------------------------------------------------------------------------
# Extrapolation
# --------------------------------------------------------------------------


def settings_defaults(env: dict[str, str]) -> dict[str, int]:
    code = (
        "from django.conf import settings as s; "
        "print(s.ALWAYS_ON_BLOCK_S, s.ALWAYS_ON_SCHEDULED_SCAN_S)"
    )
    res = check(run_proc([PYTHON, "manage.py", "shell", "-c", code], env), "settings")
    block, scan = (int(x) for x in res.stdout.split()[-2:])
    return {"block_s": block, "scan_s": scan}


def extrapolate(report: dict[str, Any]) -> dict[str, Any]:
    d = report["defaults"]
    b = report["B"]
    per_scan = max(b["promotion"]["idle_scan"])
    scans_h = 3600 / d["scan_s"]
    wake_h = 3600 / d["block_s"]  # per worker process: one blocking pop of block_s
    out: dict[str, Any] = {}
    for key, label, n in (
        ("ours_one", "ours, 1 process (manage.py work)", 1),
        ("ours_per_queue", f"ours, {len(QUEUES)} processes (--per-queue)", len(QUEUES)),
    ):
        w = b["ours_wakeup_one" if n == 1 else "ours_wakeup_per_queue"]["per_wakeup"]
        per_h = n * wake_h * w + scans_h * per_scan
        out[key] = {
            "label": label,
            "formula": f"{n} x {wake_h:.3f} wake-ups/h x {w:g} + {scans_h:g} scans/h "
            f"x {per_scan}",
            "per_hour": round(per_h, 1),
            "measured_window": f"{report[key]['window']['counts']['wire_billable']} "
            f"in {report['minutes']:g} min",
        }
    rs = b["rq_short"]
    timeout = max(1, DEFAULT_WORKER_TTL - 15)
    # RQ checks for due maintenance at each wake-up: the first wake-up after
    # the interval has passed runs it.
    maint_every = (DEFAULT_MAINTENANCE_TASK_INTERVAL // timeout + 1) * timeout
    maint = max(rs["maintenance_each"]) if rs["maintenance_each"] else 0
    rq_h = 3600 / timeout * rs["plain_wakeup"] + 3600 / maint_every * maint
    out["rq"] = {
        "label": "rq worker (defaults)",
        "formula": f"{3600 / timeout:.2f} wake-ups/h x {rs['plain_wakeup']} + "
        f"{3600 / maint_every:.2f} maintenances/h x {maint}",
        "per_hour": round(rq_h, 1),
        "measured_window": f"{report['rq']['window']['counts']['wire_billable']} "
        f"in {report['minutes']:g} min",
        "blpop_timeout_s": timeout,
        "maintenance_every_s": maint_every,
    }
    sched_min = b["rq_scheduler"]["per_minute"]
    out["rq_sched"] = {
        "label": "rq worker --with-scheduler",
        "formula": f"rq worker + 60 x {sched_min} a minute",
        "per_hour": round(rq_h + 60 * sched_min, 1),
        "measured_window": f"{b['rq_scheduler']['counts']['wire_billable']} in "
        f"{b['rq_scheduler']['wall_s']:.0f} s",
    }
    for m in CRON_MINUTES:
        out[f"cron_{m}"] = {
            "label": f"cron drain every {m} min (1 command an idle tick)",
            "formula": f"{60 // m} ticks/h x {CRON_PER_TICK}",
            "per_hour": 60 / m * CRON_PER_TICK,
            "measured_window": None,
        }
    for row in out.values():
        row["per_month"] = round(row["per_hour"] * HOURS_PER_MONTH)
        row["free_tier_pct"] = round(100 * row["per_month"] / FREE_TIER, 1)
        row["per_minute"] = round(row["per_hour"] / 60, 3)
    for key in ("ours_one", "ours_per_queue"):
        out[key]["pass"] = out[key]["per_hour"] <= TARGET_PER_HOUR
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

HEAD = [
    "",
    "wire billable",
    "wire raw",
    "AUTH",
    "conns",
    "server all",
    "server billable",
    "wall s",
]


def row(r: dict[str, Any]) -> list[Any]:
    c = r["counts"]
    return [
        r["label"],
        c["wire_billable"],
        c["wire_total"],
        c["wire_auth"],
        c["wire_connections"],
        c["server_total"],
        c["server_billable"],
        r["wall_s"],
    ]


def detail(r: dict[str, Any]) -> str:
    return f"   {r['label']}: {fmt_cmds(r['counts']['wire_by_command'])}"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    d = report["defaults"]
    b = report["B"]
    x = report["extrapolated"]
    mins = report["minutes"]
    out = [
        f"Kaireon Ops always-on benchmark, {report['date']} "
        f"(total {report['total_runtime_s']} s)",
        f"machine: {m['nproc']} CPUs, {m['platform']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}, rq {m['rq']}, redis-py {m['redis_py']}, "
        f"Django {m['django']}; load average {report['load_before']} before, "
        f"{report['load_after']} after",
        "wire = commands sent (billable: without AUTH/INFO/PING/QUIT/COMMAND); "
        "server = INFO commandstats delta (probe INFO subtracted)",
        f"five idle queues: {', '.join(QUEUES)}; each lane its own redis-server, "
        "proxy and database; lanes A1-A3 and B ran side by side",
        f"defaults: ALWAYS_ON_BLOCK_S={d['block_s']} (a wake-up every ~"
        f"{d['block_s'] / 60:.0f} min), ALWAYS_ON_SCHEDULED_SCAN_S={d['scan_s']}; "
        f"rq: worker_ttl {DEFAULT_WORKER_TTL} (BLPOP {x['rq']['blpop_timeout_s']} s), "
        f"maintenance interval {DEFAULT_MAINTENANCE_TASK_INTERVAL} s "
        f"(runs every {x['rq']['maintenance_every_s']} s)",
    ]
    for num, key, wkey, title in (
        (
            1,
            "ours_one",
            "ours_wakeup_one",
            "ours, one worker process for the five queues (manage.py work --role "
            "dedicated), defaults",
        ),
        (
            2,
            "ours_per_queue",
            "ours_wakeup_per_queue",
            "ours, one process per queue (manage.py work --role dedicated "
            "--per-queue), defaults",
        ),
    ):
        s = report[key]
        w = b[wkey]
        rows = [s["startup"], s["window"], s["shutdown"], w]
        out += ["", f"{num}. {title}", table(HEAD, [row(r) for r in rows])]
        out += [detail(r) for r in rows]
        out.append(
            f"   start-up ready after {s['startup']['wall_s']} s; idle window: "
            f"{s['window']['wakeups']} wake-ups, {s['window']['scans']} EXISTS "
            f"(measured; at the defaults a wake-up comes every {d['block_s']} s, a "
            f"scan every {d['scan_s']} s, the first one in the start-up)"
        )
        avg = {
            k: round(v / max(1, w["wakeups"]), 2)
            for k, v in w["by_command_total"].items()
        }
        out.append(
            f"   per wake-up (measured, {w['wakeups']} wake-ups): "
            f"{w['per_wakeup']} billable = {fmt_cmds(avg)}; "
            f"each: {sorted(set(w['billable_each']))}"
        )
        out.append(
            f"   per hour at the defaults (extrapolated): {x[key]['formula']} = "
            f"{x[key]['per_hour']}"
        )

    r = report["rq"]
    rs, sch = b["rq_short"], b["rq_scheduler"]
    rows = [r["startup"], r["window"], r["shutdown"], rs, sch]
    out += [
        "",
        "3. baseline: rq worker (not burst) on the five queues, one process",
        table(HEAD, [row(z) for z in rows]),
    ]
    out += [detail(z) for z in rows]
    out += [
        f"   idle window at the defaults: {r['window']['wakeups']} wake-ups in "
        f"{mins:g} min (measured)",
        f"   per wake-up (measured, short run): {rs['plain_wakeup']} = "
        f"{fmt_cmds(rs['plain_wakeup_by_command'])}",
        f"   per maintenance (measured, short run, {rs['maintenances']} runs: "
        f"{rs['maintenance_each']}): {fmt_cmds(rs['maintenance_by_command'])}",
        f"   per hour at the defaults (extrapolated): {x['rq']['formula']} = "
        f"{x['rq']['per_hour']}",
        f"   --with-scheduler: {sch['per_minute']} a minute (measured over "
        f"{sch['wall_s']} s)",
    ]

    p = b["promotion"]
    out += [
        "",
        f"4. scheduled jobs: supervisor scans with ALWAYS_ON_SCHEDULED_SCAN_S="
        f"{p['scan_s']}, one job scheduled {p['ahead_s']} s ahead on {p['queue']}",
    ]
    out.append(
        table(
            ["scan at (s after scheduling)", "kind", "billable", "commands"],
            [
                [s["at_s"], s["kind"], s["billable"], fmt_cmds(s["by_command"])]
                for s in p["scans"]
            ],
        )
    )
    out += [
        f"   scan with nothing scheduled: {p['idle_scan']} (measured)",
        f"   scans that find the job before it is due: {p['finding_scans']}; the "
        f"promoting scan: {p['promoting_scan']['billable']}; from the first scan "
        f"that finds it to the job being queued: {p['find_to_queued']} (measured)",
        f"   due {p['due_in_s']} s after scheduling (RQ keeps whole seconds), "
        f"queued {p['queued_after_due_s']:+.2f} s after that; the worker then "
        f"ran it: {p['worker_job']['billable']} billable (not part of the "
        "promotion)",
        table(HEAD, [row(p["window"])]),
    ]

    out += [
        "",
        f"Summary: idle commands per hour and per month ({HOURS_PER_MONTH} h), five "
        f"queues, free tier {FREE_TIER:,}",
    ]
    rows = []
    for z in x.values():
        verdict = ""
        if "pass" in z:
            verdict = "PASS" if z["pass"] else "FAIL"
        rows.append(
            [
                z["label"],
                "-" if z["measured_window"] is None else z["measured_window"],
                z["per_hour"],
                z["per_minute"],
                f"{z['per_month']:,}",
                f"{z['free_tier_pct']}%",
                verdict,
            ]
        )
    out.append(
        table(
            [
                "",
                "measured idle window",
                "per hour",
                "per minute",
                "per month",
                "of free tier",
                f"<= {TARGET_PER_HOUR}/h",
            ],
            rows,
        )
    )
    one, pq, rq = report["ours_one"], report["ours_per_queue"], report["rq"]
    out += [
        "   per hour/month: extrapolated from the measured per-wake-up, "
        "per-scan and per-maintenance costs at the default intervals; the "
        f"{mins:g}-minute windows are measured",
        f"   cron drain: {CRON_PER_TICK} command an idle tick (docs/benchmarks.md); "
        f"every 5 min = {IDLE_TICKS_PER_MONTH:,} a 30-day month there, "
        f"{x['cron_5']['per_month']:,} on {HOURS_PER_MONTH} h",
        "   one-off costs, not in the hourly figures: start-up "
        f"{one['startup']['counts']['wire_billable']} (1 process) / "
        f"{pq['startup']['counts']['wire_billable']} ({len(QUEUES)} processes) / "
        f"{rq['startup']['counts']['wire_billable']} (rq worker); shutdown "
        f"{one['shutdown']['counts']['wire_billable']} / "
        f"{pq['shutdown']['counts']['wire_billable']} / "
        f"{rq['shutdown']['counts']['wire_billable']}",
        "   as often as a cron drain every "
        f"{60 / x['ours_one']['per_hour']:.1f} min (1 process) / "
        f"{60 / x['ours_per_queue']['per_hour']:.1f} min ({len(QUEUES)} processes) "
        f"/ {60 / x['rq']['per_hour']:.2f} min (rq worker) would spend idle",
        f"   target (<= {TARGET_PER_HOUR} a hour, maintenance included): one process "
        f"{'PASS' if x['ours_one']['pass'] else 'FAIL'}, per-queue "
        f"{'PASS' if x['ours_per_queue']['pass'] else 'FAIL'}",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.always_on_bench")
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="idle window (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="also print JSON")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="kaireon-always-on-bench-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    lanes: list[Lane] = []

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr)

    try:
        load_before = round(os.getloadavg()[0], 2)
        for name in ("A1", "A2", "A3", "B"):
            lanes.append(Lane(name, root).start())
        a1, a2, a3, lb = lanes
        check(run_proc([PYTHON, "manage.py", "migrate", "-v", "0"], a1.env), "migrate")
        for lane in lanes[1:]:
            shutil.copy(a1.db, lane.db)
        assert a1.bench is not None
        report: dict[str, Any] = {
            "date": DATE,
            "minutes": args.minutes,
            "machine": machine_info(a1.bench.probe),
            "defaults": settings_defaults(a1.env),
            "load_before": load_before,
        }
        say(f"lanes ready in {root}; running (idle windows of {args.minutes:g} min)")
        runners = [
            Runner("ours_one", lambda: ours_idle(a1, False, args.minutes)),
            Runner("ours_per_queue", lambda: ours_idle(a2, True, args.minutes)),
            Runner("rq", lambda: rq_idle(a3, args.minutes)),
            Runner("B", lambda: lane_b(lb, say)),
        ]
        for r in runners:
            r.start()
        for r in runners:
            while r.is_alive():
                r.join(0.5)
            if r.error is not None:
                raise RuntimeError(f"lane {r.name} failed") from r.error
            say(f"{r.name} done")
            report[r.name] = r.result
        report["extrapolated"] = extrapolate(report)
        report["load_after"] = round(os.getloadavg()[0], 2)
        report["total_runtime_s"] = round(time.perf_counter() - started, 1)
        print(render(report))
        if args.json:
            print(json.dumps(report, indent=2))
        x = report["extrapolated"]
        return 0 if x["ours_one"]["pass"] and x["ours_per_queue"]["pass"] else 1
    finally:
        stop_live_processes()
        for lane in lanes:
            lane.close()


if __name__ == "__main__":
    sys.exit(main())
