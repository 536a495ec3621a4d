"""Putting jobs on queues through the project: the lean enqueue API for
application code (`enqueue`, `enqueue_many`) and the canary jobs of
`manage.py enqueue` (`enqueue_canaries`).

RQ's `Queue.enqueue()` sends 8 billed commands a job (SADD in its own
MULTI/EXEC, then MULTI, HSET status, HSET job, RPUSH, EXEC; plus an unbilled
INFO) and `Queue.enqueue_many()` about 3. The functions here write the very
same job hash (built by RQ's own `Queue.create_job` → `Job.create` and stored
by `Job.save`) and push the same ids, with nothing else:

* one `HSET` per job (`Job.save`: every field, status `queued` included);
* one `EXPIRE` per job that has a `ttl` (RQ's own `cleanup(ttl)`, minus the
  EXPIREs of dependency keys a dependency-free job does not have);
* one `RPUSH` of all the ids going to the back of the queue and one `LPUSH` of
  those going to the front (per 500 jobs), after their hashes, in the same
  non-transactional pipeline: RQ's order, so a worker never pops an id whose
  hash was not written. A client dying half-way leaves at worst hashes with
  no id (never run), never an id without a hash;
* one `SADD rq:queues rq:queue:<name>` (so RQ's `Queue.all()` and `rq info`
  list the queue) the first time this process enqueues on that queue of that
  Redis server; remembered in `_registered` afterwards.

Jobs with dependencies, scheduled jobs (`enqueue_at`/`enqueue_in`), callbacks,
repeats, webhooks and unique jobs are not written here: use RQ's
`Queue.enqueue` for those (`ops.queues.rq_queue(name, client).enqueue(...)`
with a client from `make_client`); the drains run them like any RQ job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue as RQQueue
from rq import Retry
from rq.job import Job
from rq.utils import now

from ops.jobs import KINDS
from ops.models import Source
from ops.queues import all_queue_names, rq_queue
from ops.usage import incidents
from ops.usage.redis_client import CommandMeter, close_client, make_client

MAX_COUNT = 100_000
# Jobs per pipeline (and per RPUSH): bounds the size of one request.
_BATCH = 500

# (host, port, unix socket path, db, queue key) of the queues this process has
# added to RQ's `rq:queues` set: the SADD is sent once per process and queue.
_registered: set[tuple[Any, ...]] = set()
_registered_lock = threading.Lock()

# RQ options this API does not write, and what to say about them.
_USE_RQ = frozenset(
    {
        "depends_on",
        "enqueue_at",
        "enqueue_in",
        "on_success",
        "on_failure",
        "on_stopped",
        "repeat",
        "webhooks",
        "unique",
        "pipeline",
        "group_id",
    }
)
_RENAMED = {
    "job_timeout": "use timeout=",
    "args": "pass the job function's positional arguments after func",
}


def _reject_unsupported(where: str, options: Mapping[str, Any]) -> None:
    if not options:
        return
    names = sorted(options)
    rq_only = [n for n in names if n in _USE_RQ]
    if rq_only:
        raise TypeError(
            f"{where} does not support {', '.join(rq_only)}: dependencies, "
            "scheduled jobs (enqueue_at/enqueue_in), callbacks, repeats, webhooks "
            "and unique jobs need RQ's Queue.enqueue "
            "(ops.queues.rq_queue(name, client).enqueue(...)); the drains run "
            "those jobs too"
        )
    hints = [f"{n} ({_RENAMED[n]})" for n in names if n in _RENAMED]
    others = [n for n in names if n not in _RENAMED]
    parts = hints + (
        [
            f"{', '.join(others)} (the job function's keyword arguments go in "
            "kwargs={...})"
        ]
        if others
        else []
    )
    raise TypeError(f"{where} got unexpected keyword argument(s): {'; '.join(parts)}")


@dataclass(frozen=True)
class JobSpec:
    """One job for `enqueue_many`: the same fields as `enqueue`'s arguments.

    `func` is a callable or its dotted path (what RQ stores and the workers
    import); `args`/`kwargs` are what it is called with.
    """

    func: str | Callable[..., Any]
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] | None = None
    job_id: str | None = None
    timeout: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    ttl: int | None = None
    description: str | None = None
    meta: dict[str, Any] | None = None
    retry: Retry | None = None
    at_front: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> JobSpec:
        # Runs before the generated __init__: an RQ option this API does not
        # support gets the message saying what to use instead.
        _reject_unsupported(
            "JobSpec()", {k: v for k, v in kwargs.items() if k not in _SPEC_FIELDS}
        )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if isinstance(self.func, str):
            if not self.func:
                raise ValueError("func must be a callable or a dotted path")
        elif not callable(self.func):
            raise TypeError(f"func must be a callable or a dotted path: {self.func!r}")
        elif getattr(self.func, "__module__", None) == "__main__":
            # What RQ's Queue.enqueue refuses too: no worker can import it.
            raise ValueError(
                "Functions from the __main__ module cannot be processed by workers"
            )
        if not isinstance(self.args, tuple | list):
            raise TypeError(f"args must be a tuple or a list, got {self.args!r}")
        if self.kwargs is not None and not isinstance(self.kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {self.kwargs!r}")
        if self.meta is not None and not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {self.meta!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError(f"retry must be an rq.Retry, got {self.retry!r}")


_SPEC_FIELDS = frozenset(JobSpec.__dataclass_fields__)


def enqueue(
    queue: str,
    func: str | Callable[..., Any],
    *args: Any,
    job_id: str | None = None,
    timeout: int | None = None,
    result_ttl: int | None = None,
    failure_ttl: int | None = None,
    ttl: int | None = None,
    description: str | None = None,
    meta: dict[str, Any] | None = None,
    retry: Retry | None = None,
    at_front: bool = False,
    kwargs: dict[str, Any] | None = None,
    client: redis.Redis | None = None,
    **unsupported: Any,
) -> Job:
    """Put one RQ job on `queue`: `func(*args, **kwargs)`.

    The job is RQ's own (any RQ worker and the drains run it; `Job.fetch`
    reads it like one from `Queue.enqueue`); options mean what they mean for
    `Queue.enqueue_call` (`timeout` is RQ's `job_timeout`, default the queue's
    180 s). The job function's keyword arguments go in `kwargs={...}`, so they
    never clash with the options.

    Cost: 2 commands (HSET, RPUSH/LPUSH); +1 (EXPIRE) with `ttl`; +1 (SADD
    rq:queues) the first time this process enqueues on this queue.

    Not supported (TypeError): `depends_on`, `enqueue_at`/`enqueue_in`,
    `on_success`/`on_failure`/`on_stopped`, `repeat`, `webhooks`, `unique`:
    use RQ's `Queue.enqueue` for those (`ops.queues.rq_queue(name,
    client).enqueue(...)`), whose jobs the drains run too.

    Raises ValueError for a queue the console does not know. Redis errors
    (unreachable, quota exhausted: `ops.usage.quota_errors`) propagate
    unchanged.

    Without `client`, the commands go through a metered client (source
    "enqueue") closed afterwards, and a quota error opens or counts the quota
    incident before it propagates; with `client`, through that one, which is
    neither closed nor metered by this function, and incidents are the
    caller's business. The returned job keeps the client it was written with:
    reading it again (`job.get_status()`) reconnects that client.
    """
    _reject_unsupported("enqueue()", unsupported)
    spec = JobSpec(
        func,
        args,
        kwargs,
        job_id=job_id,
        timeout=timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        ttl=ttl,
        description=description,
        meta=meta,
        retry=retry,
        at_front=at_front,
    )
    return _enqueue_specs(queue, [spec], client)[0]


def enqueue_many(
    queue: str, jobs: Iterable[JobSpec], *, client: redis.Redis | None = None
) -> list[Job]:
    """Put several RQ jobs on `queue`, in order; returns them in that order.

    Cost: 1 HSET per job, +1 EXPIRE per job with a `ttl`, +1 RPUSH (jobs at
    the back) and +1 LPUSH (jobs with `at_front`, which end up at the front
    in reverse order, as with RQ) per 500 jobs, +1 SADD rq:queues the first
    time this process enqueues on this queue: 101 commands for 100 jobs.

    Every job is built (and checked) before anything is sent. Jobs go out in
    pipelines of 500: if Redis fails during the second one, the first 500
    jobs are on the queue and the error propagates. Same unsupported options,
    errors, `client` and metering as `enqueue`.
    """
    specs = list(jobs)
    for spec in specs:
        if not isinstance(spec, JobSpec):
            raise TypeError(f"enqueue_many takes JobSpec objects, got {spec!r}")
    return _enqueue_specs(queue, specs, client)


def forget_registered_queues() -> None:
    """Send the SADD rq:queues again on the next enqueue of every queue: for
    tests, and after the Redis behind a URL was flushed or replaced."""
    with _registered_lock:
        _registered.clear()


def enqueue_canaries(
    queue_name: str,
    *,
    kind: str,
    count: int,
    sleep_ms: int = 100,
    timeout: int | None = None,
) -> list[str]:
    func = KINDS[kind]
    args = (sleep_ms,) if kind == "sleep" else ()
    spec = JobSpec(func, args, timeout=timeout)
    return [job.id for job in enqueue_many(queue_name, [spec] * count)]


def _enqueue_specs(
    queue: str, specs: list[JobSpec], client: redis.Redis | None
) -> list[Job]:
    known = all_queue_names()
    if queue not in known:
        raise ValueError(
            f"unknown queue {queue!r}; valid queues: {', '.join(known) or '(none)'}"
        )
    if not specs:
        return []
    if client is not None:
        return _write(queue, specs, client)
    own = make_client(CommandMeter(Source.ENQUEUE))
    try:
        with incidents.noting_quota_errors(Source.ENQUEUE):
            return _write(queue, specs, own)
    finally:
        close_client(own)


def _build(rq: RQQueue, spec: JobSpec) -> Job:
    """The job `rq.enqueue_call` would write, without sending anything: RQ's
    `create_job` (queue defaults, checks, `Job.create`), then what its
    `_prepare_for_queue` sets (less the server version it reads with INFO and
    never stores)."""
    job = rq.create_job(
        spec.func,
        args=spec.args,
        kwargs=spec.kwargs,
        timeout=spec.timeout,
        result_ttl=spec.result_ttl,
        ttl=spec.ttl,
        failure_ttl=spec.failure_ttl,
        description=spec.description,
        job_id=spec.job_id,
        meta=spec.meta,
        retry=spec.retry,
    )
    job.enqueued_at = now()
    return job


def _registration(client: redis.Redis, queue_key: str) -> tuple[Any, ...]:
    kw = client.connection_pool.connection_kwargs
    return (kw.get("host"), kw.get("port"), kw.get("path"), kw.get("db"), queue_key)


def _write(queue: str, specs: list[JobSpec], client: redis.Redis) -> list[Job]:
    rq = rq_queue(queue, client)
    jobs = [_build(rq, spec) for spec in specs]
    registration = _registration(client, rq.key)
    with _registered_lock:
        register = registration not in _registered
    for start in range(0, len(jobs), _BATCH):
        end = start + _BATCH
        chunk = list(zip(jobs[start:end], specs[start:end], strict=True))
        pipe = client.pipeline(transaction=False)
        if register:
            pipe.sadd(rq.redis_queues_keys, rq.key)
        for job, _ in chunk:
            job.save(pipeline=pipe)
            if job.ttl:
                pipe.expire(job.key, job.ttl)
        # After every hash of the chunk: RQ's order (hash, then id).
        back = [job.id for job, spec in chunk if not spec.at_front]
        front = [job.id for job, spec in chunk if spec.at_front]
        if back:
            pipe.rpush(rq.key, *back)
        if front:
            pipe.lpush(rq.key, *front)
        pipe.execute()
        if register:
            with _registered_lock:
                _registered.add(registration)
            register = False
    return jobs
