"""Benchmark of the drain engine against plain `rq worker --burst`.

    .venv/bin/python -m bench.drain_bench [--jobs 2000] [--per-job-jobs 200] [--json]

Starts its own private redis-server (bench.redis_server.PrivateRedis) with a
counting proxy in front of it (bench.wire_proxy.WireProxy), a throwaway SQLite
database and state directory, and measures in one run:

1. the idle drain over the five empty runbook queues: ours as a fresh process,
   ours in-process, and `rq worker --burst` (target: ours = 1 command);
2. Redis commands per job to drain N no-op jobs: ours, `rq worker --burst` with
   SimpleWorker (the class our child uses) and with the default forking Worker;
3. throughput draining `--jobs` no-op jobs, process start-up included, ours vs
   `rq worker --burst -w rq.worker.SimpleWorker`, alternating, twice each
   (target: ours >= 0.9x the baseline);
4. wall time, CPU time and peak RSS of `manage.py drain` as a fresh process on
   an idle tick (median of 5), of the drain's child starting on an empty queue,
   and of `rq worker --burst` for reference; from these and section 3, a split
   of the throughput gap into start-up and per-job time.

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
IDLE_TARGET = 1
THROUGHPUT_TARGET = 0.9
IDLE_TICKS_PER_MONTH = 8_640  # a 5-minute cron over 30 days
FREE_TIER = 500_000
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

    def env_for(self, url: str) -> dict[str, str]:
        return {**self.env, "REDIS_URL": url}

    def flush(self) -> None:
        self.probe.flushall()

    def enqueue(self, count: int) -> None:
        """The same enqueue for every contender (`manage.py enqueue`'s code:
        ops.jobs.noop through enqueue_many), straight to redis-server: it is
        set-up, never measured."""
        from django.test import override_settings

        from ops.engine.enqueue import enqueue_canaries

        with override_settings(REDIS_URL=self.direct_url):
            ids = enqueue_canaries(JOB_QUEUE, kind="noop", count=count)
        assert len(ids) == count

    def verify_drained(self, count: int, who: str) -> None:
        left = self.probe.llen(f"rq:queue:{JOB_QUEUE}")
        finished = self.probe.zcard(f"rq:finished:{JOB_QUEUE}")
        failed = self.probe.zcard(f"rq:failed:{JOB_QUEUE}")
        if left or finished != count or failed:
            raise RuntimeError(
                f"{who}: expected {count} finished jobs, found {finished} finished, "
                f"{failed} failed, {left} still queued"
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

    @staticmethod
    def drain_json(result: ProcResult) -> dict[str, Any]:
        return json.loads(result.stdout)

    # -- 1. idle ---------------------------------------------------------------

    def idle(self) -> dict[str, Any]:
        from ops.engine.drain import drain
        from ops.engine.drain_options import parse_options

        rows: dict[str, Any] = {}
        self.flush()
        with measured(self.meter) as box:
            res = check(run_proc(self.ours_argv(), self.env), "manage.py drain")
        data = self.drain_json(res)
        rows["ours_process"] = {
            "label": "ours: manage.py drain (fresh process)",
            "counts": asdict(box[0]),
            "self_reported": data["redisCommands"],
            "wall_ms": round(res.wall_s * 1000, 1),
        }

        self.flush()
        with measured(self.meter) as box:
            start = time.perf_counter()
            run = drain(trigger="cli", options=parse_options())
            wall = time.perf_counter() - start
        rows["ours_in_process"] = {
            "label": "ours: drain() in-process",
            "counts": asdict(box[0]),
            "self_reported": run.redis_commands,
            "wall_ms": round(wall * 1000, 1),
        }

        self.flush()
        with measured(self.meter) as box:
            res = check(run_proc(self.rq_argv(self.proxy_url), self.env), "rq worker")
        rows["rq_burst"] = {
            "label": "rq worker --burst (fresh process)",
            "counts": asdict(box[0]),
            "self_reported": None,
            "wall_ms": round(res.wall_s * 1000, 1),
        }
        for key in ("ours_process", "ours_in_process"):
            rows[key]["target"] = IDLE_TARGET
            rows[key]["pass"] = rows[key]["counts"]["wire_billable"] == IDLE_TARGET
        return rows

    # -- 2. commands per job ---------------------------------------------------

    def per_job(self, n: int, idle: dict[str, Any]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        variants: list[tuple[str, str, list[str], str]] = [
            (
                "ours",
                "ours: manage.py drain",
                self.ours_argv("--max-duration-ms", "600000"),
                "ours_process",
            ),
            (
                "rq_simple",
                "rq worker --burst -w SimpleWorker",
                self.rq_argv(self.proxy_url, "rq.worker.SimpleWorker"),
                "rq_burst",
            ),
            (
                "rq_fork",
                "rq worker --burst (forking Worker)",
                self.rq_argv(self.proxy_url),
                "rq_burst",
            ),
        ]
        for key, label, argv, idle_key in variants:
            self.flush()
            self.enqueue(n)
            with measured(self.meter) as box:
                res = check(run_proc(argv, self.env), label)
            self.verify_drained(n, label)
            counts = box[0]
            idle_billable = idle[idle_key]["counts"]["wire_billable"]
            row: dict[str, Any] = {
                "label": label,
                "jobs": n,
                "counts": asdict(counts),
                "per_job": round(counts.wire_billable / n, 2),
                "per_job_beyond_idle": round(
                    (counts.wire_billable - idle_billable) / n, 2
                ),
                "server_per_job": round(counts.server_billable / n, 2),
                "wire_per_job_by_command": {
                    c: round(v / n, 2)
                    for c, v in counts.wire_by_command.items()
                    if v / n >= 0.5
                },
                "wall_s": round(res.wall_s, 2),
            }
            if key == "ours":
                data = self.drain_json(res)
                row["self_reported"] = data["redisCommands"]
                assert data["totalProcessed"] == n, data
            rows[key] = row
        return rows

    # -- 3. throughput ---------------------------------------------------------

    def throughput(self, n: int) -> dict[str, Any]:
        # Straight to redis-server: the proxy is Python threads in this process
        # and would add its own CPU and latency on a 2-core machine.
        env = self.env_for(self.direct_url)
        ours_argv = self.ours_argv("--max-duration-ms", "600000")
        base_argv = self.rq_argv(self.direct_url, "rq.worker.SimpleWorker")
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "rq_simple": []}
        for _ in range(2):
            for key, argv in (("ours", ours_argv), ("rq_simple", base_argv)):
                self.flush()
                self.enqueue(n)
                before = self._server_calls()
                res = check(run_proc(argv, env), key)
                executed = self._server_calls() - before
                self.verify_drained(n, key)
                run: dict[str, Any] = {
                    "wall_s": round(res.wall_s, 3),
                    "jobs_per_s": round(n / res.wall_s, 1),
                    "cpu_s": round(res.cpu_s, 2),
                    "cpu_ms_per_job": round(1000 * res.cpu_s / n, 2),
                    "maxrss_mib": round(res.maxrss_kib / 1024, 1),
                    "server_executed": executed,
                }
                if key == "ours":
                    data = self.drain_json(res)
                    assert data["totalProcessed"] == n, data
                    run["engine_duration_ms"] = data["durationMs"]
                    run["redis_commands"] = data["redisCommands"]
                runs[key].append(run)
        best = {k: max(r["jobs_per_s"] for r in v) for k, v in runs.items()}
        ratio = best["ours"] / best["rq_simple"]
        return {
            "jobs": n,
            "runs": runs,
            "best": best,
            "ratio": round(ratio, 3),
            "target": THROUGHPUT_TARGET,
            "pass": ratio >= THROUGHPUT_TARGET,
        }

    def _server_calls(self) -> int:
        stats = self.probe.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    # -- 4. idle tick cost as a process -----------------------------------------

    def idle_process(self, repeats: int = 5) -> dict[str, Any]:
        env = self.env_for(self.direct_url)
        self.flush()
        # The drain's child on its own, on an empty queue: the start-up every
        # queue with work pays once per drain. `exec` keeps the pid, so the
        # child's parent is the process that started the shell (--parent-pid).
        child = (
            f"exec {PYTHON} -m ops.engine.drain_worker --queue {JOB_QUEUE} --deadline "
            f"{time.time() + 3600!r} --worker-name bench.startup.$$ "
            "--report-fd 1 --parent-pid $PPID"
        )
        out: dict[str, Any] = {}
        for key, label, argv in (
            ("ours", "ours: manage.py drain (idle tick)", self.ours_argv()),
            (
                "ours_child",
                "ours: drain child start-up (python -m ops.engine.drain_worker, empty)",
                ["/bin/sh", "-c", child],
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


def analysis(report: dict[str, Any]) -> dict[str, Any]:
    """Split each contender's throughput into a fixed start-up (section 4, same
    run) and a per-job part: in wall time (best case: fastest runs) and in CPU
    time (medians; CPU time hardly moves with the machine's load)."""
    tp, ip = report["throughput"], report["idle_process"]
    n = tp["jobs"]
    runs = tp["runs"]
    fixed_wall = {
        "ours": min(ip["ours"]["wall_ms"]) + min(ip["ours_child"]["wall_ms"]),
        "rq_simple": min(ip["rq_burst"]["wall_ms"]),
    }
    fixed_cpu = {
        "ours": ip["ours"]["cpu_ms_median"] + ip["ours_child"]["cpu_ms_median"],
        "rq_simple": ip["rq_burst"]["cpu_ms_median"],
    }
    best_wall = {k: min(r["wall_s"] for r in v) * 1000 for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s"] for r in v) * 1000 for k, v in runs.items()}
    per_job = {k: (best_wall[k] - fixed_wall[k]) / n for k in fixed_wall}
    per_job_cpu = {k: (cpu[k] - fixed_cpu[k]) / n for k in fixed_cpu}
    # Ours if its start-up cost what rq's does, per-job part unchanged.
    same_start = n / ((fixed_wall["rq_simple"] + per_job["ours"] * n) / 1000)
    # Runs of a worker on an empty queue that spent >= 0.7 s waiting (wall
    # minus CPU): RQ's pubsub thread join at exit, join(timeout=1).
    stalls = {
        k: sum(
            1
            for w, c in zip(ip[k]["wall_ms"], ip[k]["cpu_ms"], strict=True)
            if w - c >= 700
        )
        for k in ("ours_child", "rq_burst")
    }
    return {
        "fixed_startup_wall_ms_min": {k: round(v, 1) for k, v in fixed_wall.items()},
        "extra_startup_wall_ms": round(fixed_wall["ours"] - fixed_wall["rq_simple"]),
        "per_job_wall_ms": {k: round(v, 2) for k, v in per_job.items()},
        "fixed_startup_cpu_ms_median": {k: round(v, 1) for k, v in fixed_cpu.items()},
        "per_job_cpu_ms": {k: round(v, 2) for k, v in per_job_cpu.items()},
        "ratio_if_startup_equal": round(same_start / tp["best"]["rq_simple"], 3),
        # ratio = (F_rq + N p) / (F_ours + N p) >= 0.9  <=>  N >= this, with
        # p = the baseline's per-job time (the per-job paths are the same RQ
        # code; section 2 shows the same commands per job).
        "jobs_needed_for_target_at_equal_per_job": math.ceil(
            (THROUGHPUT_TARGET * fixed_wall["ours"] - fixed_wall["rq_simple"])
            / ((1 - THROUGHPUT_TARGET) * per_job["rq_simple"])
        )
        if per_job["rq_simple"] > 0
        else None,
        "exit_stalls": stalls,
    }


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


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    out: list[str] = [
        f"Kaireon Ops drain benchmark, {report['date']} "
        f"(total {report['total_runtime_s']} s)",
        f"machine: {m['nproc']} CPUs, {m['platform']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}, rq {m['rq']}, redis-py {m['redis_py']}, "
        f"Django {m['django']}",
        "wire = commands sent (billable: without AUTH/INFO/PING/QUIT/COMMAND); "
        "server = INFO commandstats delta (probe INFO subtracted)",
        "",
        "1. Idle drain, five empty queues (target: ours = "
        f"{IDLE_TARGET} billable command)",
    ]
    rows = []
    for r in report["idle"].values():
        c = r["counts"]
        verdict = ""
        if "pass" in r:
            verdict = "PASS" if r["pass"] else "FAIL"
        rows.append(
            [
                r["label"],
                c["wire_billable"],
                c["wire_total"],
                c["wire_auth"],
                c["wire_connections"],
                c["server_total"],
                c["server_billable"],
                "-" if r["self_reported"] is None else r["self_reported"],
                r["wall_ms"],
                verdict,
            ]
        )
    out.append(
        table(
            [
                "",
                "wire billable",
                "wire raw",
                "AUTH",
                "conns",
                "server all",
                "server billable",
                "self-reported",
                "wall ms",
                "target",
            ],
            rows,
        )
    )
    for r in report["idle"].values():
        cmds = ", ".join(f"{k} {v}" for k, v in r["counts"]["wire_by_command"].items())
        out.append(f"   {r['label']}: {cmds}")

    pj = report["per_job"]
    n = next(iter(pj.values()))["jobs"]
    out += ["", f"2. Commands to drain {n} no-op jobs on {JOB_QUEUE} (drain only)"]
    rows = []
    for r in pj.values():
        c = r["counts"]
        rows.append(
            [
                r["label"],
                c["wire_billable"],
                r["per_job"],
                r["per_job_beyond_idle"],
                c["wire_total"],
                c["wire_auth"],
                c["wire_connections"],
                c["server_billable"],
                r["server_per_job"],
                r.get("self_reported", "-"),
                r["wall_s"],
            ]
        )
    out.append(
        table(
            [
                "",
                "wire billable",
                "per job",
                "(total-idle)/job",
                "wire raw",
                "AUTH",
                "conns",
                "server billable",
                "server/job",
                "self-reported",
                "wall s",
            ],
            rows,
        )
    )
    for r in pj.values():
        cmds = ", ".join(f"{k} {v}" for k, v in r["wire_per_job_by_command"].items())
        out.append(f"   per job, {r['label']}: {cmds}")

    tp = report["throughput"]
    out += [
        "",
        f"3. Throughput, {tp['jobs']} no-op jobs, wall time incl. process start-up "
        "(direct to redis-server, alternating ours/rq)",
    ]
    rows = []
    for key, label in (("ours", "ours manage.py drain"), ("rq_simple", "rq Simple")):
        for i, r in enumerate(tp["runs"][key], start=1):
            rows.append(
                [
                    f"{label}, run {i}",
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
    per_run = ", ".join(
        f"{o['jobs_per_s'] / b['jobs_per_s']:.3f}"
        for o, b in zip(tp["runs"]["ours"], tp["runs"]["rq_simple"], strict=True)
    )
    out.append(
        f"   best: ours {tp['best']['ours']} jobs/s, rq SimpleWorker "
        f"{tp['best']['rq_simple']} jobs/s; ratio ours/baseline = {tp['ratio']:.3f} "
        f"(per pair: {per_run}), target >= {tp['target']}: "
        f"{'PASS' if tp['pass'] else 'FAIL'}"
    )

    ip = report["idle_process"]
    rss_note = "" if all(r["rss_exact"] for r in ip.values()) else " (RSS: upper bound)"
    out += [
        "",
        f"4. Fresh processes on an idle tick, direct to redis-server "
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
    pw, pc = an["per_job_wall_ms"], an["per_job_cpu_ms"]
    st, runs = an["exit_stalls"], ip["rq_burst"]["runs"]
    out += [
        "",
        "Where the throughput gap goes (time = fixed start-up + N x per job):",
        f"   start-up, wall (fastest runs): ours {fw['ours']} ms (manage.py drain + "
        f"one child) vs rq {fw['rq_simple']} ms = +{an['extra_startup_wall_ms']} ms",
        f"   start-up, CPU (medians): ours {fc['ours']} ms vs rq {fc['rq_simple']} ms",
        f"   per job, wall: ours {pw['ours']} ms, rq {pw['rq_simple']} ms; "
        f"CPU: ours {pc['ours']} ms, rq {pc['rq_simple']} ms",
        f"   ours/rq if ours started as fast as rq: {an['ratio_if_startup_equal']}; "
        "a drain needs "
        f"{an['jobs_needed_for_target_at_equal_per_job']} jobs for 0.9x at equal "
        "per-job time",
        f"   runs waiting >= 0.7 s (wall - CPU; RQ's pubsub thread join at exit): "
        "drain child "
        f"{st['ours_child']}/{runs}, rq worker {st['rq_burst']}/{runs} runs",
    ]

    cron = report["cron_month"]
    out += [
        "",
        f"5-minute cron, {IDLE_TICKS_PER_MONTH} idle ticks a month "
        f"(free tier {FREE_TIER:,}):",
    ]
    for r in cron.values():
        out.append(
            f"   {r['label']}: {r['per_tick']} x {IDLE_TICKS_PER_MONTH} = "
            f"{r['per_month']:,} commands ({r['free_tier_pct']}% of the free tier)"
        )
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
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_bench")
    parser.add_argument("--jobs", type=int, default=2000, help="throughput jobs")
    parser.add_argument(
        "--per-job-jobs", type=int, default=200, help="jobs for commands per job"
    )
    parser.add_argument("--json", action="store_true", help="also print JSON")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.per_job_jobs < 1:
        parser.error("--jobs and --per-job-jobs must be at least 1")

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

        # This process drains in-process too: same settings as the children.
        os.environ.update(bench.env)
        import django

        django.setup()

        report: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "machine": machine_info(bench.probe),
            "probe_overhead_per_reading": bench.meter.probe_overhead_total,
        }
        say("1. idle drains")
        report["idle"] = bench.idle()
        say(f"2. commands per job ({args.per_job_jobs} jobs)")
        report["per_job"] = bench.per_job(args.per_job_jobs, report["idle"])
        say(f"3. throughput ({args.jobs} jobs, 4 runs)")
        report["throughput"] = bench.throughput(args.jobs)
        say("4. idle ticks as fresh processes (3 x 5 runs)")
        report["idle_process"] = bench.idle_process()
        report["analysis"] = analysis(report)
        report["cron_month"] = {
            key: {
                "label": report["idle"][key]["label"],
                "per_tick": (t := report["idle"][key]["counts"]["wire_billable"]),
                "per_month": t * IDLE_TICKS_PER_MONTH,
                "free_tier_pct": round(100 * t * IDLE_TICKS_PER_MONTH / FREE_TIER, 1),
            }
            for key in ("ours_process", "rq_burst")
        }
        report["total_runtime_s"] = round(time.perf_counter() - started, 1)
        print(render(report))
        if args.json:
            print(json.dumps(report, indent=2))
        ok = all(r["pass"] for r in report["idle"].values() if "pass" in r) and bool(
            report["throughput"]["pass"]
        )
        return 0 if ok else 1
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
