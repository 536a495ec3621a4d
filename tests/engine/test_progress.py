"""A running drain writes its progress to its row: counts that grow while it
runs, at most one UPDATE a second, nothing for an idle drain."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from ops.engine import background
from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.engine.enqueue import enqueue_canaries
from ops.engine.progress import PROGRESS_INTERVAL_S, ProgressWriter
from ops.models import DrainRun

JOBS = 10


def _progress_updates(queries: list[dict[str, str]]) -> list[str]:
    """The progress writes: UPDATEs of the run that set `progress_at` only
    while it runs (DrainRun.note_progress; not the final save())."""
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith('UPDATE "ops_drainrun"')
        and '"progress_at" =' in q["sql"]
        and """"ops_drainrun"."status" = 'running'""" in q["sql"]
    ]


@pytest.mark.django_db(transaction=True)
def test_a_running_drain_shows_growing_counts_with_bounded_writes() -> None:
    # Ten jobs of 0.4 s, one after another: about 4 s of work, so about four
    # progress writes (the first comes a second after the drain began).
    enqueue_canaries("batch-jobs", kind="sleep", count=JOBS, sleep_ms=400)
    options = parse_options(
        queues=["batch-jobs"], max_concurrent_queues=1, max_duration_ms=60_000
    )
    run = DrainRun.objects.create(
        trigger=DrainRun.Trigger.ADMIN,
        status=DrainRun.Status.QUEUED,
        params=options.as_params(),
        worker_prefix="kdrain.progress0.",
    )
    captured: dict[str, object] = {}

    def drain_in_a_thread() -> None:
        try:
            with CaptureQueriesContext(connection) as ctx:
                begun = time.monotonic()
                captured["run"] = background.run_queued(run.pk, fork_children=False)
                captured["elapsed"] = time.monotonic() - begun
            captured["queries"] = ctx.captured_queries
        finally:
            connections.close_all()

    thread = threading.Thread(target=drain_in_a_thread)
    thread.start()
    seen: list[tuple[int, int, dict[str, str]]] = []
    while thread.is_alive():
        row = DrainRun.objects.get(pk=run.pk)
        if row.status == DrainRun.Status.RUNNING:
            left = sum(r.get("remaining", 0) for r in row.queue_results.values())
            seen.append((row.total_processed, left, row.current_jobs))
        time.sleep(0.1)
    thread.join()

    finished = captured["run"]
    assert isinstance(finished, DrainRun)
    assert finished.status == DrainRun.Status.SUCCEEDED
    assert finished.total_processed == JOBS
    assert finished.current_jobs == {}
    processed = [p for p, _, _ in seen]
    assert processed == sorted(processed), "counts never go back"
    # Seen from outside while it ran: at least two different counts between
    # none and all, what was left going down, and a job named as running.
    assert len({p for p in processed if 0 < p < JOBS}) >= 2, processed
    lefts = [left for p, left, _ in seen if p > 0]
    assert lefts == sorted(lefts, reverse=True) and lefts[0] < JOBS
    assert any(jobs.get("batch-jobs") for _, _, jobs in seen)
    # Bounded: at most one progress UPDATE per interval of the drain's life
    # (the first comes after one interval), far fewer than one per job event.
    writes = _progress_updates(captured["queries"])  # type: ignore[arg-type]
    elapsed = captured["elapsed"]
    assert isinstance(elapsed, float)
    assert 2 <= len(writes) <= int(elapsed / PROGRESS_INTERVAL_S) + 1, (
        len(writes),
        elapsed,
    )


@pytest.mark.django_db(transaction=True)
def test_an_idle_drain_writes_no_progress_and_sends_one_command(wire) -> None:
    with CaptureQueriesContext(connection) as ctx:
        run = drain(trigger=DrainRun.Trigger.CLI, options=parse_options())

    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.progress_at is None
    assert _progress_updates(ctx.captured_queries) == []
    assert wire.snapshot() == {"AUTH": 1, "EXISTS": 1}


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.django_db
def test_the_writer_writes_at_most_once_an_interval_and_only_changes() -> None:
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    clock = _Clock()
    writer = ProgressWriter(run, lambda: 5, clock=clock)
    writer.expect({"batch-jobs": 10})
    tallies = {"batch-jobs": {"processed": 1, "failed": 0}}

    assert not writer.write(tallies, {"batch-jobs": "a"}, 3)  # too soon
    clock.now = 1.0
    assert writer.write(tallies, {"batch-jobs": "a"}, 3)
    clock.now = 1.5
    tallies["batch-jobs"]["processed"] = 2
    assert not writer.write(tallies, {"batch-jobs": "b"}, 4)  # within the second
    clock.now = 2.5
    assert writer.write(tallies, {"batch-jobs": "b"}, 4)
    clock.now = 4.0
    assert not writer.write(tallies, {"batch-jobs": "b"}, 4)  # nothing changed

    assert writer.writes == 2
    run.refresh_from_db()
    assert run.total_processed == 2
    assert run.queue_results == {
        "batch-jobs": {"processed": 2, "failed": 0, "remaining": 8}
    }
    assert run.redis_commands == 5 + 4
    assert run.current_jobs == {"batch-jobs": "b"}
    assert run.progress_at is not None


@pytest.mark.django_db
def test_progress_never_overwrites_a_finished_run() -> None:
    run = DrainRun.objects.create(trigger=DrainRun.Trigger.CLI)
    run.finish(
        status=DrainRun.Status.SUCCEEDED,
        queue_results={"batch-jobs": {"processed": 3, "failed": 0, "remaining": 0}},
    )

    written = run.note_progress(
        queue_results={"batch-jobs": {"processed": 1, "failed": 0, "remaining": 2}},
        redis_commands=1,
        current_jobs={"batch-jobs": "late"},
    )

    assert not written
    run.refresh_from_db()
    assert run.total_processed == 3 and run.current_jobs == {}
