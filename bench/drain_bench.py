"""Benchmark of the drain engine's two executors against plain `rq worker --burst`.

    .venv/bin/python -m bench.drain_bench [--jobs 2000] [--per-job-jobs 2000]
                                          [--enqueue-calls 200] [--json]

Starts its own private redis-server (bench.redis_server.PrivateRedis) with a
counting proxy in front of it (bench.wire_proxy.WireProxy), a throwaway SQLite
database and state directory, and measures in one run, on the same jobs
(`ops.jobs.noop` on batch-jobs, written beforehand with rq's own
`Queue.enqueue_many`, straight to redis-server: set-up, never measured):

A. run only, side by side, four contenders: `rq worker --burst -w
   rq.worker.SimpleWorker` (the baseline), `rq worker --burst` (forking
   Worker), ours (`manage.py drain`) with DRAIN_EXECUTOR=rq and with
   DRAIN_EXECUTOR=lean: billed commands per job on the wire (through the
   proxy, `--per-job-jobs` jobs), and jobs/s with the whole process's wall time,
   start-up included (straight to redis-server, `--jobs` jobs; three
   alternating rounds of the baseline and both of ours, the forking Worker
   once; best run against best run), and the billed commands of a drain of
   a single job (the fixed part of a tick that finds work);
B. run only with result_ttl=0 jobs: lean vs SimpleWorker, per job billed;
C. enqueue cost through the proxy: our `enqueue()` (`--enqueue-calls` single
   calls), our `enqueue_many` in batches of 100, rq's `Queue.enqueue` and
   `Queue.enqueue_many` (batches of 100);
D. end to end through our API: `enqueue_many` (batches of 100) + the lean
   drain, default result_ttl and result_ttl=0 (fire-and-forget);
E. ticks with nothing to run: the idle drain over the five empty queues (ours
   as a fresh process and in-process, `rq worker --burst` for reference) and
   ticks whose only finding is a job scheduled a day ahead: the first one that
   sees it (the first sighting), two after it, and one after the engine's
   re-check interval (the cheap look);
F. fresh processes on an idle tick (wall, CPU, peak RSS; the drain children
   `python -m ops.engine.drain_worker` / `lean_worker` on an empty queue) and,
   from them and A, a split of each contender's time into start-up and per job.

Targets, each printed PASS/FAIL: idle tick = 1; a tick with only a far-future
scheduled job = 1 (the ticks after the first sighting; the first sighting, paid
once, and the re-check, once per DRAIN_SCHEDULED_RECHECK_S, are not that tick and
are reported as figures with their cost); lean run only <= 5 per job, with
result_ttl=0 <= 1.5; enqueue() <= 2 a call, enqueue_many of 100 <= 1.1 a job;
end to end fire-and-forget <= 3 a job; throughput lean >= 3x SimpleWorker and
ours with DRAIN_EXECUTOR=rq >= 0.9x, start-up included.
Exit status 0 only when every target passes; every figure is printed anyway.

Counts are given twice: on the wire (what the client sends, what a per-command-
billed Redis bills; AUTH/INFO/PING/QUIT/COMMAND are not billed) and on the
server (the delta of `INFO commandstats`, read over a separate direct
connection whose own INFO calls are subtracted). Everything started here is
stopped on the way out, errors and signals included.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench.redis_server import PrivateRedis
from bench.wire_proxy import WireProxy

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RQ_CLI = str(Path(sys.executable).with_name("rq"))
QUEUES = ["batch-jobs", "dsar-jobs", "journey-jobs", "retrain-jobs", "seed-jobs"]
JOB_QUEUE = "batch-jobs"
UNBILLED = frozenset({"AUTH", "INFO", "PING", "QUIT", "COMMAND"})
NOOP = "ops.jobs.noop"
IDLE_TICKS_PER_MONTH = 8_640  # a 5-minute cron over 30 days
FREE_TIER = 500_000
ENQUEUE_BATCH = 100  # jobs per enqueue_many call in sections C and D
FAR_AHEAD_S = 86_400  # the far-future scheduled job of section E: a day ahead

# The targets (docs/benchmarks.md). Billed commands on the wire unless said.
IDLE_TARGET = 1  # an idle tick, and a tick that finds only a far-future job
# Ticks of section E held to IDLE_TARGET. The far-future job's first sighting
# (paid once) and the re-check (once per DRAIN_SCHEDULED_RECHECK_S) are not
# such ticks: they are reported as figures, with their cost, not as targets.
TICKS_WITH_TARGET = frozenset(
    {"idle_process", "idle_in_process", "far_process", "far_in_process"}
)
THROUGHPUT_TARGET = 0.9  # ours with DRAIN_EXECUTOR=rq vs rq SimpleWorker
LEAN_THROUGHPUT_TARGET = 3.0  # ours with DRAIN_EXECUTOR=lean vs rq SimpleWorker
LEAN_PER_JOB_TARGET = 5.0  # run only, default result_ttl
LEAN_TTL0_PER_JOB_TARGET = 1.5  # run only, result_ttl=0
ENQUEUE_SINGLE_TARGET = 2.0  # enqueue(), a call (after the process's first)
ENQUEUE_BATCH_TARGET = 1.1  # enqueue_many of 100, a job
END_TO_END_TARGET = 3.0  # enqueue_many + lean drain, fire-and-forget, a job
PROC_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

_live: dict[int, subprocess.Popen[bytes]] = {}


# ru_maxrss from wait4() is not the child's own peak: exec() carries the
# spawning process's high-water RSS over (Linux, exec_mmap), so every child of
# this process (Django loaded, ~60 MiB) would report at least that. GNU time
# forks from a ~2 MiB process, so its %M is the child's real peak.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass
class ProcResult:
    argv: list[str]
    returncode: int
    wall_s: float
    cpu_s: float  # user + system, the process and every child it reaped
    maxrss_kib: int
    rss_exact: bool  # False: wait4's figure, an upper bound (see GNU_TIME)
    stdout: str
    stderr: str


def run_proc(
    argv: Sequence[str], env: dict[str, str], timeout: float = PROC_TIMEOUT_S
) -> ProcResult:
    """Run a command to completion. Wall time covers start-up and exit; CPU
    time and peak RSS cover the process and the children it waited for."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(prefix="kaireon-bench-time-") as rss_file,
    ):
        full = list(argv)
        if GNU_TIME:
            full = [GNU_TIME, "-q", "-f", "%M", "-o", rss_file.name, *full]
        start = time.perf_counter()
        proc = subprocess.Popen(
            full,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group: we can stop it all
        )
        _live[proc.pid] = proc
        timer = threading.Timer(timeout, _kill_group, args=(proc,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        _live.pop(proc.pid, None)
        out.seek(0)
        err.seek(0)
        maxrss, exact = usage.ru_maxrss, False  # KiB on Linux
        if GNU_TIME:
            text = Path(rss_file.name).read_text().strip().splitlines()
            if text and text[-1].isdigit():
                maxrss, exact = int(text[-1]), True
        return ProcResult(
            argv=list(argv),
            returncode=proc.returncode,
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            maxrss_kib=maxrss,
            rss_exact=exact,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_live_processes() -> None:
    for pid, proc in list(_live.items()):
        _kill_group(proc)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
        _live.pop(pid, None)


def check(result: ProcResult, what: str) -> ProcResult:
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} exited with status {result.returncode}:\n"
            f"{' '.join(result.argv)}\n--- stdout\n{result.stdout[-2000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}"
        )
    return result


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------


@dataclass
class Counts:
    wire_billable: int
    wire_total: int
    wire_auth: int
    wire_connections: int
    server_total: int  # every executed call, our probe's INFO subtracted
    server_billable: int  # the same without AUTH/INFO/PING/QUIT/COMMAND
    wire_by_command: dict[str, int] = field(default_factory=dict)
    server_by_command: dict[str, int] = field(default_factory=dict)


class Meter:
    """Wire counts from the proxy, executed counts from INFO commandstats."""

    def __init__(self, proxy: WireProxy, probe: redis.Redis) -> None:
        self.proxy = proxy
        self.probe = probe
        self._before: Counter[str] = Counter()
        self._connections = 0
        # What one reading adds to the next one (the INFO itself: Redis counts
        # a command after running it, so a reading never includes itself).
        first = self._server()
        self.probe_overhead = self._server() - first
        self.probe_overhead_total = sum(self.probe_overhead.values())

    def _server(self) -> Counter[str]:
        stats = self.probe.info("commandstats")
        counts: Counter[str] = Counter()
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_").upper()
            counts[name] = int(value["calls"])
        return counts

    def begin(self) -> None:
        self.proxy.reset()
        self._connections = self.proxy.connections
        self._before = self._server()

    def end(self) -> Counts:
        after = self._server()
        wire = self.proxy.snapshot()
        server = after - self._before
        server.subtract(self.probe_overhead)
        server = +server  # drop zero/negative entries
        return Counts(
            wire_billable=sum(n for c, n in wire.items() if c not in UNBILLED),
            wire_total=sum(wire.values()),
            wire_auth=wire.get("AUTH", 0),
            wire_connections=self.proxy.connections - self._connections,
            server_total=sum(server.values()),
            server_billable=sum(
                n for c, n in server.items() if c.split("|")[0] not in UNBILLED
            ),
            wire_by_command=dict(wire.most_common()),
            server_by_command=dict(server.most_common()),
        )


@contextlib.contextmanager
def measured(meter: Meter) -> Iterator[list[Counts]]:
    box: list[Counts] = []
    meter.begin()
    yield box
    box.append(meter.end())


# --------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    kind: str  # "rq": the rq CLI; "ours": manage.py drain
    option: str | None  # rq: the worker class; ours: DRAIN_EXECUTOR


CONTENDERS = [
    Contender(
        "rq_simple",
        "rq worker --burst -w SimpleWorker (baseline)",
        "rq",
        "rq.worker.SimpleWorker",
    ),
    Contender("rq_fork", "rq worker --burst (forking Worker)", "rq", None),
    Contender("ours_rq", "ours: manage.py drain, DRAIN_EXECUTOR=rq", "ours", "rq"),
    Contender("lean", "ours: manage.py drain, DRAIN_EXECUTOR=lean", "ours", "lean"),
]
BY_KEY = {c.key: c for c in CONTENDERS}


def per_job_by_command(
    counts: Counts, n: int, floor: float = 0.005
) -> dict[str, float]:
    """Billed commands per job, by command (AUTH and the like left out)."""
    return {
        c: round(v / n, 3)
        for c, v in counts.wire_by_command.items()
        if c not in UNBILLED and v / n >= floor
    }


class Bench:
    def __init__(self, server: PrivateRedis, proxy: WireProxy, state: Path) -> None:
        self.server = server
        self.proxy = proxy
        self.state = state
        self.proxy_url = proxy.url(server.password)
        self.direct_url = server.url()
        self.env = dict(os.environ)
        for name in list(self.env):
            if name.startswith(("DRAIN_", "REDIS_", "RQ_")):
                del self.env[name]
        self.env.update(
            DJANGO_SETTINGS_MODULE="kaireon.settings",
            KAIREON_STATE_DIR=str(state),
            DATABASE_URL=f"sqlite:///{state / 'kaireon.sqlite3'}",
            SECRET_KEY="bench-" + os.urandom(16).hex(),
            DEBUG="0",
            REDIS_URL=self.proxy_url,
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.probe = redis.Redis(
            host="127.0.0.1",
            port=server.port,
            password=server.password,
            protocol=2,
            driver_info=None,
        )
        self.probe.ping()
        self.meter = Meter(proxy, self.probe)

    # -- helpers -------------------------------------------------------------

    def env_for(self, url: str, executor: str | None = None) -> dict[str, str]:
        env = {**self.env, "REDIS_URL": url}
        if executor:
            env["DRAIN_EXECUTOR"] = executor
        return env

    def flush(self) -> None:
        self.probe.flushall()
        # Our enqueue API sends `SADD rq:queues` once per process and queue;
        # after a flush the set is gone, so the next enqueue must send it again
        # (and pay for it, as a fresh process would). Only if this process
        # imported it (bench/always_on_bench.py flushes without Django).
        enqueue = sys.modules.get("ops.engine.enqueue")
        if enqueue is not None:
            enqueue.forget_registered_queues()

    def setup_jobs(self, count: int, result_ttl: int | None = None) -> None:
        """The jobs every contender runs: `ops.jobs.noop` through a plain rq
        client's `Queue.enqueue_many`, straight to redis-server: set-up, never
        measured."""
        from rq import Queue

        client = redis.Redis.from_url(self.direct_url)
        try:
            queue = Queue(JOB_QUEUE, connection=client)
            for start in range(0, count, 500):
                queue.enqueue_many(
                    [
                        Queue.prepare_data(NOOP, result_ttl=result_ttl)
                        for _ in range(min(500, count - start))
                    ]
                )
        finally:
            client.close()
        assert self.probe.llen(f"rq:queue:{JOB_QUEUE}") == count

    def verify_drained(self, count: int, who: str, *, kept: bool = True) -> None:
        """Every job ran and finished; `kept`: its result is kept (default
        result_ttl), else the job is gone (result_ttl=0). No claim list left."""
        left = self.probe.llen(f"rq:queue:{JOB_QUEUE}")
        finished = self.probe.zcard(f"rq:finished:{JOB_QUEUE}")
        failed = self.probe.zcard(f"rq:failed:{JOB_QUEUE}")
        jobs = sum(1 for _ in self.probe.scan_iter(match="rq:job:*", count=1000))
        claimed = sum(
            1 for _ in self.probe.scan_iter(match="kaireon:claimed:*", count=1000)
        )
        expected = count if kept else 0
        if left or failed or finished != expected or jobs != expected or claimed:
            raise RuntimeError(
                f"{who}: expected {expected} finished jobs kept, found {finished} "
                f"finished, {jobs} job hashes, {failed} failed, {left} still "
                f"queued, {claimed} claim lists"
            )

    def ours_argv(self, *extra: str) -> list[str]:
        return [PYTHON, "manage.py", "drain", "--json", *extra]

    def rq_argv(self, url: str, worker_class: str | None = None) -> list[str]:
        argv = [RQ_CLI, "worker", "--burst", "-u", url]
        if worker_class:
            argv += ["-w", worker_class]
        # Ours runs RQ's worker logger at WARNING (kaireon/settings.py); give
        # the baseline the same so neither pays for a log line per job.
        argv += ["--logging_level", "WARNING"]
        return argv + QUEUES

    def contender_cmd(self, c: Contender, url: str) -> tuple[list[str], dict[str, str]]:
        if c.kind == "ours":
            argv = self.ours_argv("--max-duration-ms", "600000")
            return argv, self.env_for(url, c.option)
        return self.rq_argv(url, c.option), self.env_for(url)

    @staticmethod
    def drain_json(result: ProcResult) -> dict[str, Any]:
        return json.loads(result.stdout)

    def _server_calls(self) -> int:
        stats = self.probe.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    # -- A and B: run only, wire counts ----------------------------------------

    def run_only_counts(
        self, n: int, keys: Sequence[str], result_ttl: int | None = None
    ) -> dict[str, Any]:
        """Each contender drains the same n jobs through the counting proxy."""
        rows: dict[str, Any] = {}
        for key in keys:
            c = BY_KEY[key]
            argv, env = self.contender_cmd(c, self.proxy_url)
            self.flush()
            self.setup_jobs(n, result_ttl)
            with measured(self.meter) as box:
                res = check(run_proc(argv, env), c.label)
            self.verify_drained(n, c.label, kept=result_ttl != 0)
            counts = box[0]
            row: dict[str, Any] = {
                "label": c.label,
                "jobs": n,
                "result_ttl": result_ttl,
                "counts": asdict(counts),
                "per_job": round(counts.wire_billable / n, 3),
                "server_per_job": round(counts.server_billable / n, 3),
                "wire_per_job_by_command": per_job_by_command(counts, n),
                "wall_s_through_proxy": round(res.wall_s, 2),
                "self_reported": None,
            }
            if c.kind == "ours":
                data = self.drain_json(res)
                assert data["totalProcessed"] == n, data
                row["self_reported"] = data["redisCommands"]
            rows[key] = row
        return rows

    # -- A: throughput, straight to redis-server ---------------------------------

    def throughput(self, n: int, rounds: int = 3) -> dict[str, Any]:
        # Straight to redis-server: the proxy is Python threads in this process
        # and would add its own CPU and latency on a 2-core machine.
        order = ["rq_simple", "ours_rq", "lean"] * rounds + ["rq_fork"]
        runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in CONTENDERS}
        for key in order:
            c = BY_KEY[key]
            argv, env = self.contender_cmd(c, self.direct_url)
            self.flush()
            self.setup_jobs(n)
            before = self._server_calls()
            res = check(run_proc(argv, env), c.label)
            executed = self._server_calls() - before
            self.verify_drained(n, c.label)
            run: dict[str, Any] = {
                "wall_s": round(res.wall_s, 3),
                "jobs_per_s": round(n / res.wall_s, 1),
                "cpu_s": round(res.cpu_s, 2),
                "cpu_ms_per_job": round(1000 * res.cpu_s / n, 3),
                "maxrss_mib": round(res.maxrss_kib / 1024, 1),
                "server_executed": executed,
            }
            if c.kind == "ours":
                data = self.drain_json(res)
                assert data["totalProcessed"] == n, data
                run["engine_duration_ms"] = data["durationMs"]
                run["redis_commands"] = data["redisCommands"]
            runs[key].append(run)
        best = {k: max(r["jobs_per_s"] for r in v) for k, v in runs.items()}
        ratio = {k: round(best[k] / best["rq_simple"], 3) for k in best}
        # Each round's run against the same round's baseline run.
        per_round = {
            k: [
                round(r["jobs_per_s"] / b["jobs_per_s"], 3)
                for r, b in zip(runs[k], runs["rq_simple"], strict=False)
            ]
            for k in ("ours_rq", "lean")
        }
        return {
            "jobs": n,
            "rounds": rounds,
            "order": order,
            "runs": runs,
            "best": best,
            "ratio": ratio,
            "ratio_per_round": per_round,
        }

    # -- C: enqueue cost -------------------------------------------------------

    def enqueue_cost(self, calls: int, n: int) -> dict[str, Any]:
        """Through the proxy, in this process. Ours without a client (each call
        its own metered connection, as application code calls it); rq's with
        one plain client (redis.Redis.from_url) for the whole loop."""
        from rq import Queue

        from ops.engine.enqueue import JobSpec, enqueue, enqueue_many
        from ops.jobs import noop

        def batches(total: int) -> list[int]:
            return [
                min(ENQUEUE_BATCH, total - s) for s in range(0, total, ENQUEUE_BATCH)
            ]

        rows: dict[str, Any] = {}

        def one(
            key: str, label: str, sizes: list[int], call: Any, closer: Any = None
        ) -> None:
            self.flush()
            per_call: list[int] = []
            with measured(self.meter) as box:
                for size in sizes:
                    before = self.proxy.billed(UNBILLED)
                    call(size)
                    per_call.append(self.proxy.billed(UNBILLED) - before)
                if closer is not None:
                    closer()
            jobs = sum(sizes)
            queued = self.probe.llen(f"rq:queue:{JOB_QUEUE}")
            assert queued == jobs, (key, queued, jobs)
            counts = box[0]
            rest = per_call[1:] or per_call
            rows[key] = {
                "label": label,
                "jobs": jobs,
                "calls": len(sizes),
                "jobs_per_call": sizes[0],
                "counts": asdict(counts),
                "per_job": round(counts.wire_billable / jobs, 3),
                "per_call": per_call,
                "first_call": per_call[0],
                "later_calls_median": statistics.median(rest),
                "later_calls_max": max(rest),
                # After the process's first call on the queue (its SADD
                # rq:queues, or rq's connection handshake), per job.
                "later_per_job": round(sum(rest) / sum(sizes[1:] or sizes), 3),
                "wire_per_job_by_command": per_job_by_command(counts, jobs, 0.0),
            }

        one(
            "ours_single",
            "ours: enqueue(queue, func), one job a call",
            [1] * calls,
            lambda _: enqueue(JOB_QUEUE, noop),
        )
        one(
            "ours_batch",
            f"ours: enqueue_many, {ENQUEUE_BATCH} jobs a call",
            batches(n),
            lambda size: enqueue_many(JOB_QUEUE, [JobSpec(noop)] * size),
        )
        client = redis.Redis.from_url(self.proxy_url)
        queue = Queue(JOB_QUEUE, connection=client)
        one(
            "rq_single",
            "rq: Queue.enqueue, one job a call",
            [1] * calls,
            lambda _: queue.enqueue(NOOP),
        )
        one(
            "rq_batch",
            f"rq: Queue.enqueue_many, {ENQUEUE_BATCH} jobs a call",
            batches(n),
            lambda size: queue.enqueue_many(
                [Queue.prepare_data(NOOP) for _ in range(size)]
            ),
            closer=client.close,
        )
        return rows

    # -- D: end to end through our API -----------------------------------------

    def end_to_end(self, n: int) -> dict[str, Any]:
        from ops.engine.enqueue import JobSpec, enqueue_many
        from ops.jobs import noop

        rows: dict[str, Any] = {}
        for key, result_ttl, label in (
            ("default", None, "enqueue_many + lean drain, default result_ttl"),
            ("ttl0", 0, "enqueue_many + lean drain, result_ttl=0 (fire-and-forget)"),
        ):
            self.flush()
            spec = JobSpec(noop, result_ttl=result_ttl)
            with measured(self.meter) as box:
                for start in range(0, n, ENQUEUE_BATCH):
                    enqueue_many(JOB_QUEUE, [spec] * min(ENQUEUE_BATCH, n - start))
            enq = box[0]
            argv, env = self.contender_cmd(BY_KEY["lean"], self.proxy_url)
            with measured(self.meter) as box:
                res = check(run_proc(argv, env), label)
            run = box[0]
            data = self.drain_json(res)
            assert data["totalProcessed"] == n, data
            self.verify_drained(n, label, kept=result_ttl != 0)
            total = enq.wire_billable + run.wire_billable
            rows[key] = {
                "label": label,
                "jobs": n,
                "result_ttl": result_ttl,
                "enqueue": asdict(enq),
                "run": asdict(run),
                "self_reported_run": data["redisCommands"],
                "enqueue_per_job": round(enq.wire_billable / n, 3),
                "run_per_job": round(run.wire_billable / n, 3),
                "total": total,
                "per_job": round(total / n, 3),
            }
        return rows

    # -- E: ticks with nothing to run --------------------------------------------

    def ticks(self) -> dict[str, Any]:
        from rq import Queue

        from ops.engine.drain import drain
        from ops.engine.drain_options import parse_options

        rows: dict[str, Any] = {}

        def fresh(key: str, label: str, env: dict[str, str] | None = None) -> None:
            env = env or self.env
            with measured(self.meter) as box:
                res = check(run_proc(self.ours_argv(), env), "manage.py drain")
            rows[key] = {
                "label": label,
                "counts": asdict(box[0]),
                "self_reported": self.drain_json(res)["redisCommands"],
                "wall_ms": round(res.wall_s * 1000, 1),
            }

        def in_process(key: str, label: str) -> None:
            with measured(self.meter) as box:
                start = time.perf_counter()
                run = drain(trigger="cli", options=parse_options())
                wall = time.perf_counter() - start
            rows[key] = {
                "label": label,
                "counts": asdict(box[0]),
                "self_reported": run.redis_commands,
                "wall_ms": round(wall * 1000, 1),
            }

        self.flush()
        fresh("idle_process", "idle: ours, manage.py drain (fresh process)")
        self.flush()
        in_process("idle_in_process", "idle: ours, drain() in-process")
        self.flush()
        with measured(self.meter) as box:
            res = check(run_proc(self.rq_argv(self.proxy_url), self.env), "rq worker")
        rows["idle_rq_burst"] = {
            "label": "idle: rq worker --burst (fresh process, reference)",
            "counts": asdict(box[0]),
            "self_reported": None,
            "wall_ms": round(res.wall_s * 1000, 1),
        }

        # One job scheduled a day ahead, written straight to redis-server. The
        # engine remembers what its look found (a ScheduledHint; re-checked
        # after DRAIN_SCHEDULED_RECHECK_S, when this build has it), so the ticks
        # are measured in sequence: the first one that sees the job (the first
        # sighting), the ones after it, and one after the re-check interval has
        # passed (set to 1 s for that process only: the cheap look).
        self.flush()
        client = redis.Redis.from_url(self.direct_url)
        try:
            job = Queue(JOB_QUEUE, connection=client).enqueue_in(
                dt.timedelta(seconds=FAR_AHEAD_S), NOOP
            )
        finally:
            client.close()
        fresh(
            "far_first",
            "far-future job only: 1st tick (first sighting), manage.py drain",
        )
        fresh("far_process", "far-future job only: 2nd tick, manage.py drain")
        in_process("far_in_process", "far-future job only: 3rd tick, in-process")
        from django.conf import settings

        recheck = getattr(settings, "DRAIN_SCHEDULED_RECHECK_S", None)
        if recheck:
            time.sleep(1.2)
            fresh(
                "far_recheck",
                "far-future job only: re-check tick (RECHECK_S=1, 1.2 s later)",
                {**self.env, "DRAIN_SCHEDULED_RECHECK_S": "1"},
            )
        rows["far_recheck_s"] = recheck
        still = self.probe.zscore(f"rq:scheduled:{JOB_QUEUE}", job.id)
        if still is None or self.probe.llen(f"rq:queue:{JOB_QUEUE}"):
            raise RuntimeError("the far-future job did not stay scheduled")
        for key, row in rows.items():
            if key in TICKS_WITH_TARGET:
                row["target"] = IDLE_TARGET
                row["pass"] = row["counts"]["wire_billable"] <= IDLE_TARGET
        return rows

    # -- F: idle tick cost as a process -----------------------------------------

    def idle_process(self, repeats: int = 5) -> dict[str, Any]:
        env = self.env_for(self.direct_url)
        self.flush()
        # The drain's children on their own, on an empty queue: the start-up a
        # spawned child pays once per queue with work. `exec` keeps the pid, so
        # the child's parent is the process that started the shell.
        deadline = repr(time.time() + 3600)

        def child(module: str) -> list[str]:
            return [
                "/bin/sh",
                "-c",
                f"exec {PYTHON} -m {module} --queue {JOB_QUEUE} --deadline "
                f"{deadline} --worker-name bench.startup.$$ --report-fd 1 "
                "--parent-pid $PPID",
            ]

        out: dict[str, Any] = {}
        for key, label, argv in (
            ("ours", "ours: manage.py drain (idle tick)", self.ours_argv()),
            (
                "rq_child",
                "ours: RQ child start-up (python -m ops.engine.drain_worker, empty)",
                child("ops.engine.drain_worker"),
            ),
            (
                "lean_child",
                "ours: lean child start-up (python -m ops.engine.lean_worker, empty)",
                child("ops.engine.lean_worker"),
            ),
            (
                "rq_burst",
                "rq worker --burst (idle tick, reference)",
                self.rq_argv(self.direct_url),
            ),
        ):
            walls: list[float] = []
            cpus: list[float] = []
            rss: list[int] = []
            exact = True
            for _ in range(repeats):
                res = check(run_proc(argv, env), label)
                walls.append(res.wall_s * 1000)
                cpus.append(res.cpu_s * 1000)
                rss.append(res.maxrss_kib)
                exact = exact and res.rss_exact
            out[key] = {
                "label": label,
                "runs": repeats,
                "wall_ms": [round(w, 1) for w in walls],
                "wall_ms_median": round(statistics.median(walls), 1),
                "cpu_ms": [round(c, 1) for c in cpus],
                "cpu_ms_median": round(statistics.median(cpus), 1),
                "maxrss_kib": rss,
                "maxrss_mib_median": round(statistics.median(rss) / 1024, 1),
                "rss_exact": exact,
            }
        return out


# --------------------------------------------------------------------------
# Derived figures
# --------------------------------------------------------------------------


def analysis(report: dict[str, Any]) -> dict[str, Any]:
    """Split each contender's throughput into a fixed start-up (section F, same
    run) and a per-job part: in wall time (best case: fastest runs) and in CPU
    time (medians; CPU time hardly moves with the machine's load). Ours'
    start-up counts a spawned child; `manage.py drain` forks its child, so the
    split overstates ours' start-up and understates its per-job time."""
    tp, ip = report["throughput"], report["idle_process"]
    n = tp["jobs"]
    runs = tp["runs"]
    fixed_wall = {
        "ours_rq": min(ip["ours"]["wall_ms"]) + min(ip["rq_child"]["wall_ms"]),
        "lean": min(ip["ours"]["wall_ms"]) + min(ip["lean_child"]["wall_ms"]),
        "rq_simple": min(ip["rq_burst"]["wall_ms"]),
    }
    fixed_cpu = {
        "ours_rq": ip["ours"]["cpu_ms_median"] + ip["rq_child"]["cpu_ms_median"],
        "lean": ip["ours"]["cpu_ms_median"] + ip["lean_child"]["cpu_ms_median"],
        "rq_simple": ip["rq_burst"]["cpu_ms_median"],
    }
    best_wall = {k: min(r["wall_s"] for r in runs[k]) * 1000 for k in fixed_wall}
    cpu = {k: statistics.median(r["cpu_s"] for r in runs[k]) * 1000 for k in fixed_cpu}
    per_job = {k: (best_wall[k] - fixed_wall[k]) / n for k in fixed_wall}
    per_job_cpu = {k: (cpu[k] - fixed_cpu[k]) / n for k in fixed_cpu}
    # Runs of a worker on an empty queue that spent >= 0.7 s waiting (wall
    # minus CPU): RQ's pubsub thread join at exit, join(timeout=1).
    stalls = {
        k: sum(
            1
            for w, c in zip(ip[k]["wall_ms"], ip[k]["cpu_ms"], strict=True)
            if w - c >= 700
        )
        for k in ("rq_child", "lean_child", "rq_burst")
    }
    return {
        "fixed_startup_wall_ms_min": {k: round(v, 1) for k, v in fixed_wall.items()},
        "startup_share_of_best_wall": {
            k: round(fixed_wall[k] / best_wall[k], 3) for k in fixed_wall
        },
        "per_job_wall_ms": {k: round(v, 3) for k, v in per_job.items()},
        "fixed_startup_cpu_ms_median": {k: round(v, 1) for k, v in fixed_cpu.items()},
        "per_job_cpu_ms": {k: round(v, 3) for k, v in per_job_cpu.items()},
        "exit_stalls": stalls,
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured figure, in the order of the report."""
    ro, t0, enq, e2e = (
        report["run_only"],
        report["run_only_ttl0"],
        report["enqueue"],
        report["end_to_end"],
    )
    tk, tp = report["ticks"], report["throughput"]
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, op: str, target: float, note: str = "") -> None:
        ok = value <= target if op == "<=" else value >= target
        out.append(
            {
                "name": name,
                "measured": value,
                "op": op,
                "target": target,
                "pass": bool(ok),
                "note": note,
            }
        )

    n = ro["lean"]["jobs"]
    add(
        "run only, lean, default result_ttl: billed per job",
        ro["lean"]["per_job"],
        "<=",
        LEAN_PER_JOB_TARGET,
        f"{n} jobs, one drain, start-up commands included",
    )
    add(
        "run only, lean, result_ttl=0: billed per job",
        t0["lean"]["per_job"],
        "<=",
        LEAN_TTL0_PER_JOB_TARGET,
        f"{t0['lean']['jobs']} jobs, one drain",
    )
    add(
        "enqueue(): billed per call",
        enq["ours_single"]["later_calls_max"],
        "<=",
        ENQUEUE_SINGLE_TARGET,
        f"largest of calls 2..{enq['ours_single']['calls']}; the process's first "
        f"call on a queue: {enq['ours_single']['first_call']} (SADD rq:queues); "
        f"mean over all {enq['ours_single']['calls']}: "
        f"{enq['ours_single']['per_job']}",
    )
    add(
        f"enqueue_many, {ENQUEUE_BATCH} a call: billed per job",
        enq["ours_batch"]["per_job"],
        "<=",
        ENQUEUE_BATCH_TARGET,
        f"{enq['ours_batch']['jobs']} jobs, the first call's SADD included",
    )
    add(
        "end to end, fire-and-forget (result_ttl=0): billed per job",
        e2e["ttl0"]["per_job"],
        "<=",
        END_TO_END_TARGET,
        f"default result_ttl: {e2e['default']['per_job']} per job "
        f"({'within' if e2e['default']['per_job'] <= END_TO_END_TARGET else 'over'}"
        f" {END_TO_END_TARGET:g}; not fire-and-forget)",
    )
    idle = tk["idle_process"]
    add(
        "idle tick: billed, manage.py drain",
        idle["counts"]["wire_billable"],
        "<=",
        IDLE_TARGET,
    )
    add(
        "idle tick: billed, drain() in-process",
        tk["idle_in_process"]["counts"]["wire_billable"],
        "<=",
        IDLE_TARGET,
    )
    first = tk["far_first"]["counts"]["wire_billable"]
    recheck_note = (
        f", re-check tick {tk['far_recheck']['counts']['wire_billable']} (every "
        f"DRAIN_SCHEDULED_RECHECK_S = {tk['far_recheck_s']} s)"
        if "far_recheck" in tk
        else ""
    )
    add(
        "far-future tick, after the first sighting: billed",
        max(
            tk["far_process"]["counts"]["wire_billable"],
            tk["far_in_process"]["counts"]["wire_billable"],
        ),
        "<=",
        IDLE_TARGET,
        "2nd tick (manage.py drain) and 3rd (in-process), the larger; "
        f"{_cmds(_billed_only(tk['far_process']['counts']['wire_by_command']))}; "
        f"not targets: first sighting {first} (once){recheck_note}",
    )
    add(
        "throughput, lean / SimpleWorker (jobs/s, start-up included)",
        tp["ratio"]["lean"],
        ">=",
        LEAN_THROUGHPUT_TARGET,
        f"best of {len(tp['runs']['lean'])} runs each, {tp['jobs']} jobs",
    )
    add(
        "throughput, ours DRAIN_EXECUTOR=rq / SimpleWorker",
        tp["ratio"]["ours_rq"],
        ">=",
        THROUGHPUT_TARGET,
        f"best of {len(tp['runs']['ours_rq'])} runs each",
    )
    return out


def far_month(report: dict[str, Any]) -> dict[str, Any] | None:
    """A month of 5-minute ticks that find only a far-future job, after its
    first sighting (paid once, measured: the first tick): a re-check (measured:
    the re-check tick) every ceil(re-check / 300 s) ticks, the ticks between at
    the hinted cost (measured: the second tick). Derived."""
    tk = report["ticks"]
    recheck = tk.get("far_recheck_s")
    if not recheck or "far_recheck" not in tk:
        return None
    k = max(1, math.ceil(recheck / 300))
    look = tk["far_recheck"]["counts"]["wire_billable"]
    hinted = tk["far_process"]["counts"]["wire_billable"]
    per_tick = (look + (k - 1) * hinted) / k
    return {
        "recheck_s": recheck,
        "ticks_per_cycle": k,
        "look": look,
        "first": tk["far_first"]["counts"]["wire_billable"],
        "hinted": hinted,
        "per_tick": round(per_tick, 2),
        "per_month": round(per_tick * IDLE_TICKS_PER_MONTH),
    }


def cron_month(report: dict[str, Any]) -> dict[str, Any]:
    """Jobs a FREE_TIER month holds at a 5-minute cron: the budget minus
    IDLE_TICKS_PER_MONTH idle ticks, divided by a measured per-job cost (one
    drain of the whole batch: its fixed part is spread over its jobs)."""
    tk, ro, t0, e2e, enq = (
        report["ticks"],
        report["run_only"],
        report["run_only_ttl0"],
        report["end_to_end"],
        report["enqueue"],
    )
    ours_idle = tk["idle_process"]["counts"]["wire_billable"]
    rq_idle = tk["idle_rq_burst"]["counts"]["wire_billable"]
    rows = {
        "lean_run_default": (
            "lean, run only, default result_ttl",
            ours_idle,
            ro["lean"]["per_job"],
        ),
        "lean_run_ttl0": (
            "lean, run only, result_ttl=0",
            ours_idle,
            t0["lean"]["per_job"],
        ),
        "lean_e2e_default": (
            "lean, enqueue_many + run, default result_ttl",
            ours_idle,
            e2e["default"]["per_job"],
        ),
        "lean_e2e_ttl0": (
            "lean, enqueue_many + run, result_ttl=0",
            ours_idle,
            e2e["ttl0"]["per_job"],
        ),
        "ours_rq_run": (
            "ours DRAIN_EXECUTOR=rq, run only",
            ours_idle,
            ro["ours_rq"]["per_job"],
        ),
        "ours_rq_e2e": (
            "ours DRAIN_EXECUTOR=rq, run + rq Queue.enqueue_many (sum of rows)",
            ours_idle,
            round(ro["ours_rq"]["per_job"] + enq["rq_batch"]["per_job"], 3),
        ),
        "rq_simple_run": (
            "rq worker --burst -w SimpleWorker, run only",
            rq_idle,
            ro["rq_simple"]["per_job"],
        ),
    }
    out: dict[str, Any] = {}
    for key, (label, idle, per_job) in rows.items():
        idle_month = idle * IDLE_TICKS_PER_MONTH
        left = FREE_TIER - idle_month
        out[key] = {
            "label": label,
            "idle_per_tick": idle,
            "idle_per_month": idle_month,
            "left_for_jobs": left,
            "per_job": per_job,
            "jobs_per_month": max(0, math.floor(left / per_job)),
        }
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        parts = [r[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _billed_only(by_command: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in by_command.items() if k not in UNBILLED}


def _cmds(by_command: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in by_command.items()) or "nothing"


def _tick_rows(tk: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in tk.values() if isinstance(r, dict)]


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    tp, ro = report["throughput"], report["run_only"]
    out: list[str] = [
        f"Kaireon Ops drain benchmark, {report['date']} "
        f"(total {report['total_runtime_s']} s)",
        f"machine: {m['nproc']} CPUs, {m['platform']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}, rq {m['rq']}, redis-py {m['redis_py']}, "
        f"Django {m['django']}; load average {m['loadavg_before']} before, "
        f"{report['loadavg_after']} after",
        "wire = commands sent through the counting proxy (billed: without "
        "AUTH/INFO/PING/QUIT/COMMAND); server = INFO commandstats delta",
        f"jobs: {NOOP} on {JOB_QUEUE}, written beforehand with rq's "
        "Queue.enqueue_many straight to redis-server (not measured)",
        "",
        f"A. Run only, side by side: billed on the wire for {ro['lean']['jobs']} jobs "
        f"(one process each, through the proxy); jobs/s for {tp['jobs']} jobs, "
        "wall time of the whole process incl. start-up, straight to redis-server",
    ]
    rows = []
    for c in CONTENDERS:
        r = ro[c.key]
        cnt = r["counts"]
        jps = ", ".join(str(x["jobs_per_s"]) for x in tp["runs"][c.key])
        rows.append(
            [
                c.label,
                cnt["wire_billable"],
                r["per_job"],
                cnt["server_billable"],
                "-" if r["self_reported"] is None else r["self_reported"],
                cnt["wire_connections"],
                tp["best"][c.key],
                jps,
                f"{tp['ratio'][c.key]:.3f}x",
            ]
        )
    out.append(
        table(
            [
                "",
                "billed",
                "per job",
                "server billable",
                "self-reported",
                "conns",
                "jobs/s best",
                "jobs/s runs",
                "vs SimpleWorker",
            ],
            rows,
        )
    )
    for c in CONTENDERS:
        out.append(
            f"   per job, {c.label}: {_cmds(ro[c.key]['wire_per_job_by_command'])}"
        )

    out += [
        "",
        f"A2. Throughput runs ({tp['jobs']} jobs, straight to redis-server, "
        f"in this order: {', '.join(tp['order'])})",
    ]
    rows = []
    for c in CONTENDERS:
        for i, r in enumerate(tp["runs"][c.key], start=1):
            rows.append(
                [
                    f"{c.label}, run {i}",
                    r["jobs_per_s"],
                    r["wall_s"],
                    r.get("engine_duration_ms", "-"),
                    r["cpu_s"],
                    r["cpu_ms_per_job"],
                    r["maxrss_mib"],
                    r["server_executed"],
                ]
            )
    out.append(
        table(
            [
                "",
                "jobs/s",
                "wall s",
                "engine ms",
                "CPU s",
                "CPU ms/job",
                "peak RSS MiB",
                "server executed",
            ],
            rows,
        )
    )

    pr = tp["ratio_per_round"]
    out.append(
        f"   vs SimpleWorker = best jobs/s / best jobs/s; round by round: lean "
        f"{', '.join(f'{x:.3f}' for x in pr['lean'])}; DRAIN_EXECUTOR=rq "
        f"{', '.join(f'{x:.3f}' for x in pr['ours_rq'])}"
    )

    one = report["one_job"]
    out += [
        "",
        "A3. One job, one process, through the proxy (what a tick that finds a "
        "single job costs: the fixed part of a drain with work)",
    ]
    rows = [
        [
            r["label"],
            r["counts"]["wire_billable"],
            r["counts"]["server_billable"],
            "-" if r["self_reported"] is None else r["self_reported"],
            r["wall_s_through_proxy"],
        ]
        for r in one.values()
    ]
    out.append(
        table(["", "billed", "server billable", "self-reported", "wall s"], rows)
    )
    for r in one.values():
        out.append(
            f"   {r['label']}: {_cmds(_billed_only(r['counts']['wire_by_command']))}"
        )

    t0 = report["run_only_ttl0"]
    n0 = t0["lean"]["jobs"]
    out += ["", f"B. Run only, {n0} jobs with result_ttl=0, through the proxy"]
    rows = [
        [
            r["label"],
            r["counts"]["wire_billable"],
            r["per_job"],
            r["counts"]["server_billable"],
            "-" if r["self_reported"] is None else r["self_reported"],
            r["counts"]["wire_connections"],
        ]
        for r in t0.values()
    ]
    out.append(
        table(
            ["", "billed", "per job", "server billable", "self-reported", "conns"],
            rows,
        )
    )
    for r in t0.values():
        out.append(f"   per job, {r['label']}: {_cmds(r['wire_per_job_by_command'])}")

    enq = report["enqueue"]
    out += ["", "C. Enqueue cost, through the proxy, from this process"]
    rows = [
        [
            r["label"],
            r["jobs"],
            r["calls"],
            r["counts"]["wire_billable"],
            r["per_job"],
            r["first_call"],
            r["later_calls_median"],
            r["later_calls_max"],
            r["later_per_job"],
            r["counts"]["wire_auth"],
            r["counts"]["wire_connections"],
        ]
        for r in enq.values()
    ]
    out.append(
        table(
            [
                "",
                "jobs",
                "calls",
                "billed",
                "per job",
                "1st call",
                "later calls median",
                "max",
                "later per job",
                "AUTH",
                "conns",
            ],
            rows,
        )
    )
    for r in enq.values():
        out.append(f"   per job, {r['label']}: {_cmds(r['wire_per_job_by_command'])}")

    e2e = report["end_to_end"]
    out += [
        "",
        "D. End to end through our API: enqueue_many "
        f"({ENQUEUE_BATCH} a call) + manage.py drain (lean), through the proxy",
    ]
    rows = [
        [
            r["label"],
            r["jobs"],
            r["enqueue"]["wire_billable"],
            r["enqueue_per_job"],
            r["run"]["wire_billable"],
            r["run_per_job"],
            r["total"],
            r["per_job"],
        ]
        for r in e2e.values()
    ]
    out.append(
        table(
            [
                "",
                "jobs",
                "enqueue",
                "enqueue/job",
                "run",
                "run/job",
                "total",
                "per job",
            ],
            rows,
        )
    )
    for r in e2e.values():
        out.append(
            f"   run, {r['label']}: "
            f"{_cmds(per_job_by_command(Counts(**r['run']), r['jobs']))}"
        )

    tk = report["ticks"]
    out += [
        "",
        f"E. Ticks with nothing to run (five queues; far-future = one job "
        f"scheduled {FAR_AHEAD_S // 3600} h ahead on {JOB_QUEUE})",
    ]
    rows = []
    for r in _tick_rows(tk):
        c = r["counts"]
        rows.append(
            [
                r["label"],
                c["wire_billable"],
                c["wire_total"],
                c["wire_auth"],
                c["wire_connections"],
                c["server_billable"],
                "-" if r["self_reported"] is None else r["self_reported"],
                r["wall_ms"],
                _pf(r["pass"]) if "pass" in r else "",
            ]
        )
    out.append(
        table(
            [
                "",
                "billed",
                "wire raw",
                "AUTH",
                "conns",
                "server billable",
                "self-reported",
                "wall ms",
                f"target {IDLE_TARGET}",
            ],
            rows,
        )
    )
    for r in _tick_rows(tk):
        out.append(f"   {r['label']}: {_cmds(r['counts']['wire_by_command'])}")
    fm = report["far_month"]
    if fm:
        out.append(
            f"   a far-future job only, 5-minute cron (derived): after the first "
            f"sighting ({fm['first']}, once), a re-check every "
            f"{fm['ticks_per_cycle']} ticks (re-check {fm['recheck_s']} s) = "
            f"({fm['look']} + {fm['ticks_per_cycle'] - 1} x {fm['hinted']}) / "
            f"{fm['ticks_per_cycle']} = {fm['per_tick']} a tick, "
            f"{fm['per_month']:,} a month"
        )

    out += ["", "Targets"]
    rows = [
        [
            t["name"],
            t["measured"],
            f"{t['op']} {t['target']:g}",
            _pf(t["pass"]),
            t["note"],
        ]
        for t in report["targets"]
    ]
    out.append(table(["", "measured", "target", "", "note"], rows))
    passed = sum(t["pass"] for t in report["targets"])
    out.append(f"   {passed} of {len(report['targets'])} targets pass")

    cm = report["cron_month"]
    out += [
        "",
        f"5-minute cron, {IDLE_TICKS_PER_MONTH:,} ticks a month, "
        f"{FREE_TIER:,} commands: jobs = (budget - idle ticks) / per job",
    ]
    rows = [
        [
            r["label"],
            r["idle_per_tick"],
            f"{r['idle_per_month']:,}",
            f"{r['left_for_jobs']:,}",
            r["per_job"],
            f"{r['jobs_per_month']:,}",
        ]
        for r in cm.values()
    ]
    out.append(
        table(
            ["", "idle tick", "idle month", "left for jobs", "per job", "jobs a month"],
            rows,
        )
    )
    out.append(
        "   per job: one drain of the whole batch (its fixed part spread over "
        f"{ro['lean']['jobs']} jobs); smaller drains pay the fixed part more often"
    )

    ip = report["idle_process"]
    rss_note = "" if all(r["rss_exact"] for r in ip.values()) else " (RSS: upper bound)"
    out += [
        "",
        f"F. Fresh processes on an idle tick, straight to redis-server "
        f"({next(iter(ip.values()))['runs']} runs each){rss_note}",
    ]
    rows = [
        [
            r["label"],
            r["wall_ms_median"],
            f"{min(r['wall_ms'])}-{max(r['wall_ms'])}",
            r["cpu_ms_median"],
            r["maxrss_mib_median"],
            f"{min(r['maxrss_kib']) / 1024:.1f}-{max(r['maxrss_kib']) / 1024:.1f}",
        ]
        for r in ip.values()
    ]
    out.append(
        table(
            [
                "",
                "wall ms median",
                "wall ms range",
                "CPU ms median",
                "peak RSS MiB median",
                "RSS range",
            ],
            rows,
        )
    )

    an = report["analysis"]
    fw, fc = an["fixed_startup_wall_ms_min"], an["fixed_startup_cpu_ms_median"]
    pw, pc, sh = (
        an["per_job_wall_ms"],
        an["per_job_cpu_ms"],
        an["startup_share_of_best_wall"],
    )
    st, runs = an["exit_stalls"], ip["rq_burst"]["runs"]
    out += [
        "",
        "Where the time goes (time = fixed start-up + N x per job; ours' start-up "
        "counts a spawned child, manage.py drain forks it):",
    ]
    for key, label in (
        ("rq_simple", "rq SimpleWorker"),
        ("ours_rq", "ours, DRAIN_EXECUTOR=rq"),
        ("lean", "ours, DRAIN_EXECUTOR=lean"),
    ):
        out.append(
            f"   {label}: start-up {fw[key]} ms wall (fastest runs; "
            f"{100 * sh[key]:.0f}% of its best run), {fc[key]} ms CPU (medians); "
            f"per job {pw[key]} ms wall, {pc[key]} ms CPU"
        )
    out += [
        "   runs waiting >= 0.7 s (wall - CPU; RQ's pubsub thread join at exit): "
        f"RQ child {st['rq_child']}/{runs}, lean child {st['lean_child']}/{runs}, "
        f"rq worker {st['rq_burst']}/{runs}",
    ]
    return "\n".join(out)


def machine_info(probe: redis.Redis) -> dict[str, Any]:
    import django

    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "redis_server": probe.info("server")["redis_version"],
        "rq": importlib.metadata.version("rq"),
        "redis_py": importlib.metadata.version("redis"),
        "django": django.get_version(),
        "loadavg_before": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_bench")
    parser.add_argument(
        "--jobs", type=int, default=2000, help="jobs of the throughput runs"
    )
    parser.add_argument(
        "--per-job-jobs",
        type=int,
        default=2000,
        help="jobs of the runs counted through the proxy (A, B, C batches, D)",
    )
    parser.add_argument(
        "--enqueue-calls",
        type=int,
        default=200,
        help="single-job enqueue calls counted (C)",
    )
    parser.add_argument("--json", action="store_true", help="also print JSON")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.per_job_jobs < 1 or args.enqueue_calls < 2:
        parser.error(
            "--jobs and --per-job-jobs must be at least 1, --enqueue-calls at least 2"
        )

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    started = time.perf_counter()
    state = Path(tempfile.mkdtemp(prefix="kaireon-bench-"))
    # Removed at interpreter exit, registered before Django is set up: exit
    # handlers run last-registered first, so the project's own (ops.usage.metering
    # flushes its counts to this SQLite database at exit) still find it.
    atexit.register(shutil.rmtree, state, ignore_errors=True)
    server = PrivateRedis()
    proxy: WireProxy | None = None
    bench: Bench | None = None

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr)

    try:
        server.start()
        proxy = WireProxy(server.port).start()
        bench = Bench(server, proxy, state)
        say(f"redis-server on :{server.port}, proxy on :{proxy.port}, state {state}")
        check(run_proc([PYTHON, "manage.py", "migrate", "-v", "0"], bench.env), "mig")

        # This process enqueues and drains in-process too: same settings as the
        # children (REDIS_URL: through the proxy).
        os.environ.update(bench.env)
        import django

        django.setup()

        report: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "machine": machine_info(bench.probe),
            "probe_overhead_per_reading": bench.meter.probe_overhead_total,
            "options": vars(args),
        }
        n, pj = args.jobs, args.per_job_jobs
        say(f"A. run only, wire counts ({pj} jobs, 4 contenders through the proxy)")
        report["run_only"] = bench.run_only_counts(pj, [c.key for c in CONTENDERS])
        say("A. one job, one process (3 contenders through the proxy)")
        report["one_job"] = bench.run_only_counts(1, ["rq_simple", "ours_rq", "lean"])
        say(f"A. throughput ({n} jobs, 10 runs straight to redis-server)")
        report["throughput"] = bench.throughput(n)
        say(f"B. run only, result_ttl=0 ({pj} jobs)")
        report["run_only_ttl0"] = bench.run_only_counts(
            pj, ["rq_simple", "lean"], result_ttl=0
        )
        say(f"C. enqueue cost ({args.enqueue_calls} single calls, {pj} in batches)")
        report["enqueue"] = bench.enqueue_cost(args.enqueue_calls, pj)
        say(f"D. end to end ({pj} jobs, default result_ttl and result_ttl=0)")
        report["end_to_end"] = bench.end_to_end(pj)
        say("E. idle and far-future ticks")
        report["ticks"] = bench.ticks()
        say("F. idle ticks as fresh processes (4 x 5 runs)")
        report["idle_process"] = bench.idle_process()
        report["analysis"] = analysis(report)
        report["targets"] = targets(report)
        report["cron_month"] = cron_month(report)
        report["far_month"] = far_month(report)
        report["loadavg_after"] = round(os.getloadavg()[0], 2)
        report["total_runtime_s"] = round(time.perf_counter() - started, 1)
        report["all_pass"] = all(t["pass"] for t in report["targets"])
        print(render(report))
        if args.json:
            print(json.dumps(report, indent=2))
        return 0 if report["all_pass"] else 1
    finally:
        stop_live_processes()
        if bench is not None:
            with contextlib.suppress(Exception):
                bench.probe.close()
        if proxy is not None:
            proxy.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
