"""A real `manage.py qcluster` runs the built-in schedule, and the cluster
itself sends no Redis command: every command on the wire is the drain's.

Slow by nature (django-q2's scheduler looks for due schedules about every
30 s): the waits are bounded, nothing asserts on wall time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule, Task

from ops.models import DrainRun
from ops.scheduling import schedule
from tests.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_FOR_DRAIN_S = 90
WAIT_FOR_STOP_S = 60


def _wait_for(predicate: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return None


class QCluster:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        # The main PID only: SIGTERM to the whole group can hang django-q2 at
        # "stopping" (docs/redis-billing.md); the main process stops
        # its sentinel, which stops the workers.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT_FOR_STOP_S)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture
def qcluster(manage_py) -> Iterator[Callable[[], QCluster]]:
    """Start `manage.py qcluster` against the test database and the Redis the
    fixtures point at (REDIS_URL in the environment)."""
    started: list[QCluster] = []

    def start() -> QCluster:
        env = dict(os.environ)
        env["DATABASE_URL"] = database_url()
        log = Path(tempfile.mkstemp(prefix="qcluster-", suffix=".log")[1])
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group, so a Ctrl-C in the terminal reaches pytest only.
                start_new_session=True,
            )
        cluster = QCluster(proc, log)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        if cluster.stop() is None:
            # It hung: the group is ours (start_new_session), end it.
            os.killpg(cluster.proc.pid, signal.SIGKILL)
            cluster.proc.wait(timeout=10)
        cluster.log_path.unlink(missing_ok=True)


def test_the_cluster_runs_the_schedule_and_sends_no_redis_command_itself(
    manage_py, qcluster, wire
):
    # What the run script does: sync the schedule, then start the cluster.
    every = manage_py("schedule", "--every", "1")
    assert every.returncode == 0, every.stderr
    synced = manage_py("schedule", "--sync")
    assert synced.returncode == 0, synced.stderr
    Schedule.objects.filter(name=schedule.DRAIN_SCHEDULE).update(
        next_run=timezone.now()
    )
    wire.reset()

    cluster = qcluster()

    def finished_scheduled_run() -> DrainRun | None:
        return (
            DrainRun.objects.filter(trigger=DrainRun.Trigger.SCHEDULE)
            .exclude(status=DrainRun.Status.RUNNING)
            .first()
        )

    run = _wait_for(finished_scheduled_run, WAIT_FOR_DRAIN_S)
    assert isinstance(run, DrainRun), f"no scheduled drain ran:\n{cluster.log()}"
    # django-q2 recorded the task as a success too (its monitor saves it).
    task = _wait_for(
        lambda: Task.objects.filter(group=schedule.DRAIN_SCHEDULE).first(), 30
    )
    assert isinstance(task, Task) and task.success, cluster.log()

    returncode = cluster.stop()
    assert returncode is not None, f"qcluster did not stop:\n{cluster.log()}"

    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.caller.startswith("schedule ")
    # The idle drain's single EXISTS is all that went over the wire: the
    # cluster's scheduling, queueing and bookkeeping (and the alarm check,
    # which reads Redis only to send a notification) sent nothing.
    assert run.redis_commands == 1
    # (A second slot may have come due before the stop: count every drain.)
    drains = list(DrainRun.objects.values_list("trigger", "redis_commands"))
    assert {trigger for trigger, _ in drains} == {DrainRun.Trigger.SCHEDULE}
    assert wire.billed() == sum(n for _, n in drains), (wire.snapshot(), drains)
    assert set(wire.snapshot()) <= {"AUTH", "EXISTS"}, wire.snapshot()
    # Past the slot it ran for: the missed-slot rule moved it forward.
    assert Schedule.objects.get(name=schedule.DRAIN_SCHEDULE).next_run > run.started
