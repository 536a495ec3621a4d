"""The fault-injection suite's harness: the ledger, the books, the processes and
a Redis proxy that can freeze a process at an exact Redis step or play an
outage. The fixtures are in tests/faults/conftest.py: `executor` (both
DRAIN_EXECUTORs), `ledger`, `gates`, `procs`, `redis_faults`.

How a fault test reads (test_killed_drain.py in full):

    def test_x(executor, redis_faults, procs, ledger, gates, rq_client):
        job = enqueue(rq_client, "batch-jobs", ledger, gate=gates.new("j"))
        drain = procs.drain("--queue", "batch-jobs")   # manage.py drain --json
        ledger.wait_for("start", job.id)               # the job is running
        procs.kill(drain)                              # SIGKILL
        following = procs.drain_later()                # set up while we wait
        wait_lease_lapsed()
        following.release().finish()                   # the next drain
        assert_books(rq_client, ledger, [job], runs={job.id: 1})

- `Ledger`: what the jobs themselves wrote (tests/fault_jobs.py): which job
  ran, how often, in which process, whether it ended. It is the truth the
  books are checked against, whatever Redis or the database say.
- `enqueue(client, queue, ledger, ...)`: a ledger job (tests.fault_jobs.step)
  that may wait on a gate file (`gate=`), sleep (`ms=`), have a Retry policy
  (`retry=`), hold in its on_success callback after its function returned and
  before its outcome is written (`callback_gate=`), or be scheduled (`at=`).
- `assert_books` / `check_books`: the suite's invariants. Every job ran
  exactly once (or as many times as `runs=` says) and never more than its
  Retry policy allows; no two runs of a job overlapped; none is left
  "started" (RQ's started registries, job statuses, intermediate lists, the
  lean executor's claim lists); no dead worker left registered with RQ (a
  drain's, or an always-on one whose row is not live; `workers=False` skips
  this); every DrainRun row is terminal and none still needs recovery; and
  no job is lost: each is finished, failed with a reason, stopped by an
  operator, or back on its queue (or scheduled). `check_books` returns the
  problems, for a test that adds its own.
- `Procs` (fixture `procs`): `manage.py drain/work` subprocesses on the test
  database and the Redis the fixtures point at, with the test's executor and
  short lease settings in their environment (conftest.py); killed at
  teardown. `drain_later()` starts a drain that waits, set up, for
  `.release()`; `drive(..., barrier=, ready=, skew_s=)` runs any command
  through tests/faults/drive.py (released by a barrier file, clock skewed).
- `wait_until`, `wait_lease_lapsed`, `alive`, `children_of`, `sigkill`: polling
  with timeouts instead of fixed sleeps, and the process tree.
- `StepProxy` (fixture `redis_faults`): the fault proxy (`exhaust()` /
  `restore()` quota errors, `latency_s`, `drop_connections()`) plus
  `hold(name, *parts)`, which keeps back the reply of one chosen command (a
  process frozen right after Redis did that step; inside MULTI, at its
  EXEC), and `outage()` / `recover()`, Redis "stopped": connections cut and
  refused, the data kept.

A new fault test takes the same fixtures, enqueues with `enqueue` and ends
with `assert_books`; add its scenario to the list in tests/faults/__init__.py.
A test that drains in its own process (a spawning drain, a stop request from a
thread) takes `transactional_db` and the `executor` fixture instead of `procs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone
from rq import Callback, Retry
from rq import Queue as RQQueue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from bench.fault_proxy import FaultProxy, _Reader
from ops.engine.lean_worker import CLAIM_PREFIX
from ops.models import DrainRun, WorkerProcess

JOB = "tests.fault_jobs.step"
CALLBACK = "tests.fault_jobs.hold_in_callback"
FAILURE_CALLBACK = "tests.fault_jobs.slow_failure"


def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, what: str = ""
) -> Any:
    """Poll `predicate` every 20 ms until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# --- the ledger -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    event: str  # start, end, callback (on_success), failure (on_failure)
    job_id: str
    pid: int
    ns: int


class Ledger:
    """The lines the ledger jobs appended (tests/fault_jobs.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            event, job_id, pid, ns = line.split()
            out.append(Entry(event, job_id, int(pid), int(ns)))
        return out

    def of(self, job_id: str, event: str = "start") -> list[Entry]:
        return [e for e in self.entries() if e.job_id == job_id and e.event == event]

    def runs(self, job_id: str) -> int:
        """How many times the job's function began."""
        return len(self.of(job_id))

    def kill_helpers(self) -> None:
        """SIGKILL the helpers the jobs forked (`helper` lines) still alive."""
        for entry in self.entries():
            if entry.event == "helper":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, signal.SIGKILL)

    def starts(self) -> Counter[str]:
        return Counter(e.job_id for e in self.entries() if e.event == "start")

    def wait_for(
        self, event: str, job_id: str | None = None, count: int = 1, timeout=15.0
    ) -> list[Entry]:
        """Wait until `count` lines of `event` (for `job_id`, or any job)."""

        def found() -> list[Entry]:
            hits = [
                e
                for e in self.entries()
                if e.event == event and job_id in (None, e.job_id)
            ]
            return hits if len(hits) >= count else []

        return wait_until(found, timeout, f"{count} {event!r} of {job_id or 'any'}")

    def overlaps(self, job_id: str) -> list[str]:
        """Runs of one job that overlapped: a run began while an earlier run
        had not ended yet and later did end (so its process was alive). A run
        whose process was killed has no `end`; it cannot overlap a later one."""
        lines = sorted(
            (e for e in self.entries() if e.job_id == job_id and e.event in RUN_EVENTS),
            key=lambda e: e.ns,
        )
        problems = []
        for i, first in enumerate(lines):
            if first.event != "start":
                continue
            end = next(
                (e for e in lines[i + 1 :] if e.event == "end" and e.pid == first.pid),
                None,
            )
            if end is None:
                continue
            for other in lines[i + 1 :]:
                if other.event == "start" and other.ns < end.ns:
                    problems.append(
                        f"job {job_id}: run in pid {other.pid} began while the "
                        f"run in pid {first.pid} was still running"
                    )
        return problems


RUN_EVENTS = ("start", "end")


class Gates:
    """Gate files jobs wait on (tests.fault_jobs.step's `gate`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new(self, name: str) -> str:
        return str(self.root / f"gate-{name}")

    @staticmethod
    def open(path: str) -> None:
        Path(path).touch()


def enqueue(
    client: redis.Redis,
    queue: str,
    ledger: Ledger,
    *,
    gate: str = "",
    ms: int = 0,
    retry: int = 0,
    callback_gate: str = "",
    failure_ms: int = 0,
    helper_s: int = 0,
    stubborn: bool = False,
    at: datetime | None = None,
    **rq_kwargs: Any,
) -> Job:
    """A ledger job on `queue` (enqueued as a plain rq client would). `gate`:
    it waits for that file; `retry`: Retry(max=retry); `callback_gate`: it
    holds in its on_success callback until that file exists; `failure_ms`:
    its on_failure callback writes `failure` and takes that long; `helper_s`,
    `stubborn`: see tests.fault_jobs.step; `at`: scheduled with enqueue_at;
    `rq_kwargs`: passed on to rq (depends_on=, job_timeout=, ...)."""
    kwargs: dict[str, Any] = {"job_timeout": 60, **rq_kwargs}
    if retry:
        kwargs["retry"] = Retry(max=retry)
    meta: dict[str, Any] = {"ledger": str(ledger.path)}
    if callback_gate:
        kwargs["on_success"] = Callback(CALLBACK)
        meta["callback_gate"] = callback_gate
    if failure_ms:
        kwargs["on_failure"] = Callback(FAILURE_CALLBACK)
        meta["failure_ms"] = failure_ms
    kwargs["meta"] = meta
    rq_queue = RQQueue(queue, connection=client)
    args: tuple[Any, ...] = (str(ledger.path), gate, ms)
    if helper_s or stubborn:
        args += (helper_s, stubborn)
    if at is not None:
        return rq_queue.enqueue_at(at, JOB, *args, **kwargs)
    return rq_queue.enqueue(JOB, *args, **kwargs)


# --- the books ------------------------------------------------------------------

DRAIN_WORKER_PREFIX = b"rq:worker:kdrain."
ALWAYS_ON_WORKER_PREFIX = b"rq:worker:kwork."
LIVE_WORKER_STATES = (
    WorkerProcess.State.STARTING,
    WorkerProcess.State.IDLE,
    WorkerProcess.State.BUSY,
)


def _retries_consumed(original: Job, now: Job | None) -> int:
    if not original.retries_left or now is None:
        return 0
    return original.retries_left - (now.retries_left or 0)


def check_books(
    client: redis.Redis,
    ledger: Ledger,
    jobs: Iterable[Job],
    *,
    runs: dict[str, int] | None = None,
    queues: Iterable[str] | None = None,
    workers: bool = True,
) -> list[str]:
    """Every invariant the suite holds a scenario to; returns the problems.

    `jobs`: the Job objects as enqueued (their Retry policy is read from
    them). `runs`: how many times a job's function must have begun, where not
    exactly once (a job killed before it began and failed is 0; a job killed
    mid-run and retried is 2). `queues`: where to look for started jobs
    (default: every queue the jobs are on). `workers`: also no dead worker
    left registered with RQ (no drain worker at all: call it when no drain
    runs; no always-on worker whose row is not live). The recovery of a dead
    drain or supervisor forgets them; RQ would only let their keys expire."""
    jobs = list(jobs)
    runs = runs or {}
    problems: list[str] = []
    starts = ledger.starts()
    names = set(queues or ()) | {j.origin for j in jobs}
    for job in jobs:
        try:
            now: Job | None = Job.fetch(job.id, connection=client)
        except NoSuchJobError:
            now = None
        ran = starts[job.id]
        want = runs.get(job.id, 1)
        if ran != want:
            status = now.get_status(refresh=False) if now else "gone"
            problems.append(
                f"job {job.id} of {job.origin}: ran {ran} times, expected {want} "
                f"(status {status})"
            )
        allowed = 1 + _retries_consumed(job, now)
        if ran > allowed:
            problems.append(
                f"job {job.id}: ran {ran} times, its Retry policy allows {allowed}"
            )
        problems += ledger.overlaps(job.id)
        # No job lost: finished, failed with a reason, or waiting to run.
        if now is None:
            problems.append(f"job {job.id}: its hash is gone (lost)")
            continue
        status = now.get_status()
        if status == JobStatus.FINISHED:
            if not ledger.of(job.id, "end"):
                problems.append(f"job {job.id}: finished, but no run of it ended")
        elif status == JobStatus.FAILED:
            if not now.exc_info:
                problems.append(f"job {job.id}: failed without a reason")
        elif status == JobStatus.STOPPED:
            # An operator stopped it: RQ keeps it with the failed jobs.
            registry = FailedJobRegistry(job.origin, connection=client)
            if client.zscore(registry.key, job.id) is None:
                problems.append(f"job {job.id}: stopped, not in the failed registry")
        elif status == JobStatus.QUEUED:
            listed = [
                j.decode() for j in client.lrange(f"rq:queue:{job.origin}", 0, -1)
            ]
            if job.id not in listed:
                problems.append(f"job {job.id}: says queued, is not on its queue")
        elif status == JobStatus.SCHEDULED:
            registry = ScheduledJobRegistry(job.origin, connection=client)
            if client.zscore(registry.key, job.id) is None:
                problems.append(f"job {job.id}: says scheduled, is not scheduled")
        else:
            problems.append(f"job {job.id}: left {status.value}")
    problems += check_none_started(client, names)
    if workers:
        problems += check_no_dead_workers(client)
    problems += check_runs_terminal()
    return problems


def check_none_started(client: redis.Redis, queues: Iterable[str]) -> list[str]:
    """Nothing holds a job: RQ's started registries, the intermediate lists
    (popped, never registered), the lean executor's claim lists."""
    problems = []
    for name in sorted(queues):
        key = StartedJobRegistry(name, connection=client).key
        held = client.zrange(key, 0, -1)
        if held:
            problems.append(f"{name}: still started in RQ's registry: {held}")
        stranded = client.lrange(f"rq:queue:{name}:intermediate", 0, -1)
        if stranded:
            problems.append(f"{name}: stranded in the intermediate list: {stranded}")
    claims = sorted(client.scan_iter(match=f"{CLAIM_PREFIX}*"))
    for key in claims:
        problems.append(f"claim list {key.decode()} holds {client.lrange(key, 0, -1)}")
    return problems


def check_no_dead_workers(client: redis.Redis) -> list[str]:
    """No drain's RQ worker is still registered (call when no drain runs), nor
    an always-on worker whose database row is not live."""
    problems = []
    registered = client.smembers("rq:workers")
    stale = sorted(w for w in registered if w.startswith(DRAIN_WORKER_PREFIX))
    if stale:
        problems.append(f"drain workers still registered: {stale}")
    live = {
        f"rq:worker:{name}".encode()
        for name in WorkerProcess.objects.filter(
            state__in=LIVE_WORKER_STATES, recovered_at__isnull=True
        ).values_list("name", flat=True)
    }
    dead = sorted(
        w for w in registered if w.startswith(ALWAYS_ON_WORKER_PREFIX) and w not in live
    )
    if dead:
        problems.append(f"dead always-on workers still registered: {dead}")
    return problems


def check_runs_terminal() -> list[str]:
    """Every run row is terminal, and none still waits for its recovery."""
    problems = [
        f"drain run {run.public_id} is still running"
        for run in DrainRun.objects.filter(status=DrainRun.Status.RUNNING)
    ]
    problems += [
        f"drain run {run.public_id} ({run.status}) still needs recovery"
        for run in DrainRun.objects.filter(needs_recovery=True)
    ]
    return problems


def assert_books(
    client: redis.Redis,
    ledger: Ledger,
    jobs: Iterable[Job],
    *,
    runs: dict[str, int] | None = None,
    queues: Iterable[str] | None = None,
    workers: bool = True,
) -> None:
    problems = check_books(
        client, ledger, jobs, runs=runs, queues=queues, workers=workers
    )
    assert not problems, "the books do not close:\n  " + "\n  ".join(problems)


def wait_lease_lapsed(timeout: float = 30.0) -> None:
    """Until every "running" drain's lease has lapsed by the database's clock
    (as lease.dead_runs reads it): the next drain then recovers them."""
    expiries = [
        r.lease_expires
        for r in DrainRun.objects.filter(
            status=DrainRun.Status.RUNNING, lease_expires__isnull=False
        )
    ]
    if not expiries:
        return
    latest = max(expiries)
    wait_until(lambda: timezone.now() > latest, timeout, "the drain lease to lapse")


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 10, f"pid {pid} to die")


# --- processes ------------------------------------------------------------------


@dataclass
class Proc:
    """A manage.py subprocess; its output goes to files (no pipe to fill)."""

    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def finish(self, timeout: float = 60.0) -> Finished:
        code = self.popen.wait(timeout)
        return Finished(code, self.out.read_text(), self.err.read_text())

    def running(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.returncode}\n{self.stdout}\n{self.stderr[-3000:]}"


@dataclass
class Later:
    """A process waiting at its barrier (Procs.drain_later, Procs.drive)."""

    proc: Proc
    barrier: Path
    ready: Path

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(self.ready.exists, timeout, f"{self.ready} (process set up)")

    def release(self) -> Proc:
        self.wait_ready()
        self.barrier.touch()
        return self.proc


@dataclass
class Procs:
    """Starts manage.py processes with the suite's environment; SIGKILLs
    whatever is still alive at teardown (children die with their parents)."""

    root: Path
    env: dict[str, str]
    started: list[Proc] = field(default_factory=list)

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        n = len(self.started)
        out, err = self.root / f"proc{n}.out", self.root / f"proc{n}.err"
        full = {**os.environ, **self.env, **(env or {})}
        with open(out, "wb") as o, open(err, "wb") as e:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                env=full,
                cwd=settings.BASE_DIR,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(popen, out, err)
        self.started.append(proc)
        return proc

    def manage(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start([str(settings.BASE_DIR / "manage.py"), *args], env)

    def drain(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`manage.py drain --json ...`."""
        return self.manage("drain", "--json", *args, env=env)

    def work(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        """`manage.py work --role dedicated ...` (a worker container)."""
        return self.manage("work", "--role", "dedicated", *args, env=env)

    def drive(
        self,
        *args: str,
        barrier: str = "",
        ready: str = "",
        skew_s: float = 0,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """A manage.py command through tests/faults/drive.py: it waits for the
        `barrier` file (after touching `ready`) once Django is set up, and
        runs with its clock `skew_s` seconds off."""
        argv = ["-m", "tests.faults.drive"]
        if barrier:
            argv += ["--barrier", barrier, "--ready", ready]
        if skew_s:
            argv += ["--skew-s", str(skew_s)]
        return self.start([*argv, "--", *args], env)

    def drain_later(self, *args: str, env: dict[str, str] | None = None) -> Later:
        """`manage.py drain --json ...` started now, held once set up until
        `.release()`: the test's wait (a lease lapsing) and the ~0.8 s start of
        a Django process overlap."""
        n = len(self.started)
        barrier, ready = self.root / f"barrier{n}", self.root / f"ready{n}"
        proc = self.drive(
            "drain", "--json", *args, barrier=str(barrier), ready=str(ready), env=env
        )
        return Later(proc, barrier, ready)

    def kill(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(10)

    def close(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(10)


# --- the proxy --------------------------------------------------------------------


@dataclass
class Hold:
    """One command whose reply the proxy keeps back: Redis has done it, the
    process that sent it has not heard so (a process frozen at that step)."""

    name: str
    containing: tuple[bytes, ...]
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    taken: bool = False

    def matches(self, name: str, raw: bytes) -> bool:
        return (
            not self.taken
            and name == self.name
            and all(part in raw for part in self.containing)
        )

    def wait(self, timeout: float = 15.0) -> None:
        if not self.reached.wait(timeout):
            raise AssertionError(f"no {self.name} {self.containing!r} came by")

    def release(self) -> None:
        self.released.set()


class StepProxy(FaultProxy):
    """The fault proxy (quota errors, latency, dropped connections) with two
    more faults:

    - `hold(name, *containing)`: the first command called `name` whose
      bytes contain each of `containing` is done by Redis, but its reply is kept back
      until the test releases it (or the connection dies). Inside MULTI, the
      hold moves to the EXEC: the whole transaction is done, its reply held.
    - `outage()` / `recover()`: Redis "stopped": every connection is cut and
      new ones are refused (the listening socket is closed); the data stays.
    """

    HOLD_LIMIT_S = 30.0

    def __init__(self, target_port: int) -> None:
        # Set before the parent starts accepting connections.
        self.holds: list[Hold] = []
        self.down = False
        super().__init__(target_port)

    def hold(self, name: str, *containing: bytes) -> Hold:
        hold = Hold(name.upper(), containing)
        with self._lock:
            self.holds.append(hold)
        return hold

    def outage(self) -> None:
        self.down = True
        self._stop_listening()

    def recover(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.down = False
        threading.Thread(target=self._accept, daemon=True).start()

    @contextlib.contextmanager
    def stopped(self, seconds: float) -> Iterator[None]:
        self.outage()
        try:
            yield
            time.sleep(seconds)
        finally:
            self.recover()

    def close(self) -> None:
        for hold in self.holds:
            hold.release()
        super().close()

    def _take(self, name: str, raw: bytes) -> Hold | None:
        with self._lock:
            for hold in self.holds:
                if hold.matches(name, raw):
                    hold.taken = True
                    return hold
        return None

    def _serve(self, client: socket.socket) -> None:
        if self.down:  # accepted just before the outage
            with contextlib.suppress(OSError):
                client.close()
            return
        super()._serve(client)

    def _connection(self) -> _Multi:
        return _Multi()

    def _forward(
        self,
        conn: _Multi,
        name: str,
        raw: bytes,
        upstream: socket.socket,
        from_server: _Reader,
        client: socket.socket,
    ) -> None:
        hold = self._take(name, raw)
        if name == "MULTI":
            conn.in_multi = True
        elif name in ("EXEC", "DISCARD"):
            conn.in_multi = False
            if name == "EXEC" and conn.armed is not None:
                hold, conn.armed = conn.armed, None
        elif hold is not None and conn.in_multi:
            conn.armed, hold = hold, None
        upstream.sendall(raw)
        reply = from_server.reply()
        if hold is not None:
            hold.reached.set()
            hold.released.wait(self.HOLD_LIMIT_S)
        client.sendall(reply)


@dataclass
class _Multi:
    """A connection's MULTI block: a hold taken inside it waits for the EXEC."""

    in_multi: bool = False
    armed: Hold | None = None
