"""The missed-tick alarm: states at computed times, backlog age and its cost,
the state machine over time, and its section of GET /api/v1/cron/status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rq import Queue as RQQueue
from rq.utils import utcparse

from ops.models import ConsoleSettings, DrainRun, Source
from ops.queues import enabled_queue_names
from ops.runtime import console_settings
from ops.scheduling import alarm, notify
from ops.scheduling.alarm import AlarmState

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # when the alarm was configured
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
STATUS_URL = "/api/v1/cron/status"
SECRET = "cron-secret-for-alarm-0123456789"


def configure(
    *,
    enabled: bool = True,
    minutes: int = 5,
    expected: int | None = None,
    grace: int | None = None,
    updated: datetime = T0,
) -> ConsoleSettings:
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(
        schedule_enabled=enabled,
        schedule_minutes=minutes,
        expected_interval_minutes=expected,
        alarm_grace_minutes=grace,
        updated=updated,
    )
    return ConsoleSettings.objects.get(pk=1)


def drain_at(
    started: datetime, status: str = DrainRun.Status.SUCCEEDED, **extra: object
) -> DrainRun:
    finished = None if status == DrainRun.Status.RUNNING else started + SEC
    return DrainRun.objects.create(
        trigger=extra.pop("trigger", DrainRun.Trigger.CRON),
        caller=extra.pop("caller", "cron 10.0.0.1"),
        status=status,
        started=started,
        finished=finished,
        **extra,
    )


def state_at(now: datetime) -> str:
    return alarm.evaluate(now=now).state


# --- Configuration ------------------------------------------------------------


@pytest.mark.django_db
def test_the_built_in_schedule_sets_the_interval_and_grace_defaults_to_it():
    config = alarm.alarm_config(configure(minutes=5, expected=60))
    assert (config.interval_minutes, config.grace_minutes, config.source) == (
        5,
        5,
        "schedule",
    )
    assert not config.grace_minutes_set


@pytest.mark.django_db
def test_with_the_schedule_off_the_external_interval_counts():
    config = alarm.alarm_config(configure(enabled=False, expected=60, grace=10))
    assert (config.interval_minutes, config.grace_minutes, config.source) == (
        60,
        10,
        "external",
    )


@pytest.mark.django_db
def test_without_any_interval_there_is_no_alarm():
    configure(enabled=False)
    drain_at(T0 - timedelta(days=3))
    report = alarm.evaluate(now=T0)
    assert report.state == AlarmState.OFF
    assert report.late_at is None
    assert "No missed-tick alarm" in report.headline


# --- States at computed times ---------------------------------------------------


@pytest.mark.django_db
def test_ok_then_late_then_down_after_the_last_drain():
    configure(minutes=5)  # grace: one interval
    last = T0 + MIN
    drain_at(last)
    assert state_at(last + MIN) == AlarmState.OK
    assert state_at(last + 10 * MIN) == AlarmState.OK  # interval + grace
    assert state_at(last + 10 * MIN + SEC) == AlarmState.LATE
    assert state_at(last + 15 * MIN) == AlarmState.LATE  # interval + 2 x grace
    assert state_at(last + 15 * MIN + SEC) == AlarmState.DOWN
    report = alarm.evaluate(now=last + 15 * MIN + SEC)
    assert report.late_at == last + 10 * MIN
    assert report.down_at == last + 15 * MIN
    assert report.seconds_since_last_drain == 15 * 60 + 1
    assert report.headline.startswith("Cron is down: no drain for 15 min")


@pytest.mark.django_db
def test_an_explicit_grace_and_an_external_interval():
    configure(enabled=False, expected=60, grace=10)
    last = T0 + MIN
    drain_at(last)
    assert state_at(last + 70 * MIN) == AlarmState.OK
    assert state_at(last + 70 * MIN + SEC) == AlarmState.LATE
    assert state_at(last + 80 * MIN + SEC) == AlarmState.DOWN


@pytest.mark.django_db
def test_unknown_until_a_first_drain_then_late_and_down_from_the_configuration():
    configure(minutes=5)
    # A drain from before the alarm was configured does not count.
    drain_at(T0 - timedelta(hours=1))
    assert state_at(T0 + MIN) == AlarmState.UNKNOWN
    assert state_at(T0 + 10 * MIN) == AlarmState.UNKNOWN
    assert state_at(T0 + 10 * MIN + SEC) == AlarmState.LATE
    assert state_at(T0 + 15 * MIN + SEC) == AlarmState.DOWN
    assert "No drain has started since the alarm was configured" in (
        alarm.evaluate(now=T0 + MIN).headline
    )


@pytest.mark.django_db
def test_skipped_runs_do_not_count_but_running_and_failed_ones_do():
    configure(minutes=5)
    drain_at(T0 + MIN)
    drain_at(T0 + 9 * MIN, DrainRun.Status.SKIPPED)
    assert state_at(T0 + 12 * MIN) == AlarmState.LATE
    # The scheduler called: a drain that failed on Redis, or is still running,
    # is a tick that arrived.
    drain_at(T0 + 11 * MIN, DrainRun.Status.FAILED)
    assert state_at(T0 + 12 * MIN) == AlarmState.OK
    drain_at(T0 + 20 * MIN, DrainRun.Status.RUNNING, trigger="schedule")
    report = alarm.evaluate(now=T0 + 29 * MIN)
    assert report.state == AlarmState.OK
    assert report.last_drain is not None and report.last_drain.trigger == "schedule"


@pytest.mark.django_db
def test_the_report_json_names_the_last_drain():
    configure(minutes=5)
    drain_at(T0 + MIN, caller="cron 10.9.8.7", total_processed=3)
    section = alarm.evaluate(now=T0 + 2 * MIN).as_json()
    assert section["state"] == "ok"
    assert section["expectedIntervalMinutes"] == 5
    assert section["graceMinutes"] == 5
    assert section["intervalSource"] == "schedule"
    assert section["lastDrainAt"] == (T0 + MIN).isoformat()
    assert section["lastDrainTrigger"] == "cron"
    assert section["lastDrainCaller"] == "cron 10.9.8.7"
    assert section["lastDrainStatus"] == "succeeded"
    assert section["secondsSinceLastDrain"] == 60
    # Not read: evaluate alone never talks to Redis.
    assert section["oldestQueuedJobAgeS"] is None
    assert section["backlogKnown"] is False


# --- Backlog age -------------------------------------------------------------------


def _enqueued_at(raw_redis, job_id: str) -> datetime:
    return utcparse(raw_redis.hget(f"rq:job:{job_id}", "enqueued_at").decode())


@pytest.mark.django_db
def test_backlog_age_costs_at_most_two_commands_per_queue(rq_client, raw_redis, wire):
    dsar = RQQueue("dsar-jobs", connection=rq_client)
    first = dsar.enqueue("tests.jobs.add", 1, 2)
    dsar.enqueue("tests.jobs.add", 3, 4)
    seed = RQQueue("seed-jobs", connection=rq_client).enqueue("tests.jobs.add", 5, 6)
    now = _enqueued_at(raw_redis, first.id) + timedelta(seconds=120)
    names = enabled_queue_names()
    assert len(names) == 5
    wire.reset()
    backlog = alarm.backlog_ages(names, source=Source.CONSOLE, now=now)
    assert backlog.known
    assert backlog.ages["dsar-jobs"] == 120  # the head of the list: the oldest
    expected_seed = int((now - _enqueued_at(raw_redis, seed.id)).total_seconds())
    assert backlog.ages["seed-jobs"] == expected_seed
    assert set(backlog.ages) == {"dsar-jobs", "seed-jobs"}
    assert backlog.oldest_s == 120
    # One LINDEX per queue, one HGET per non-empty queue, two pipelines.
    sent = wire.snapshot()
    sent.pop("AUTH", None)  # the private server's password: not billed
    assert sent == {"LINDEX": 5, "HGET": 2}
    assert wire.billed() == backlog.redis_commands == 7


@pytest.mark.django_db
def test_queues_known_to_be_empty_cost_nothing(wire):
    names = enabled_queue_names()
    backlog = alarm.backlog_ages(names, source=Source.API, empty=names)
    assert backlog.known and backlog.ages == {}
    assert wire.total == 0


@pytest.mark.django_db
def test_backlog_age_is_unknown_when_redis_is_down(settings):
    from bench.redis_server import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    backlog = alarm.backlog_ages(enabled_queue_names(), source=Source.CONSOLE)
    assert not backlog.known
    assert "ConnectionError" in backlog.error
    assert backlog.oldest_s is None


# --- Over time ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_alarm_goes_late_and_down_when_drains_stop_and_recovers(rq_client):
    configure(minutes=5)
    last = T0 + MIN
    drain_at(last)
    # The first drain after configuring: recorded, nothing to tell anyone.
    first = notify.check(now=last + MIN)
    assert first is not None and (first.previous, first.state) == ("unknown", "ok")
    assert first.notified is False
    assert notify.check(now=last + 5 * MIN) is None  # still ok: nothing recorded

    RQQueue("batch-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    late = notify.check(now=last + 11 * MIN)
    assert late is not None and (late.previous, late.state) == ("ok", "late")
    assert late.notified is True
    down = notify.check(now=last + 16 * MIN)
    assert down is not None and (down.previous, down.state) == ("late", "down")
    assert notify.check(now=last + 30 * MIN) is None
    row = ConsoleSettings.objects.get(pk=1)
    assert (row.alarm_state, row.alarm_changed_at) == ("down", last + 16 * MIN)

    # The scheduler is back.
    drain_at(last + 31 * MIN, trigger="schedule", caller="schedule host pid 1")
    back = notify.check(now=last + 32 * MIN)
    assert back is not None and (back.previous, back.state) == ("down", "ok")
    assert back.notified is True
    assert ConsoleSettings.objects.get(pk=1).alarm_state == "ok"


@pytest.mark.django_db
def test_down_with_jobs_waiting_says_so(rq_client):
    configure(minutes=5)
    job = RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    assert job.enqueued_at is not None
    report = alarm.with_backlog(
        alarm.evaluate(now=T0 + 20 * MIN), source=Source.CONSOLE
    )
    assert report.state == AlarmState.DOWN
    assert report.cron_down_with_jobs_waiting
    assert report.headline.startswith("Cron is down and jobs are waiting")


# --- The status endpoint -------------------------------------------------------


@pytest.fixture
def cron_secret(settings):
    settings.CRON_SECRET = SECRET


@pytest.mark.django_db(transaction=True)
def test_the_status_endpoint_shows_the_alarm(client, cron_secret, rq_client, wire):
    now = timezone.now()
    configure(minutes=5, updated=now - timedelta(hours=2))
    drain_at(now - timedelta(minutes=40))
    RQQueue("dsar-jobs", connection=rq_client).enqueue("tests.jobs.add", 1, 2)
    wire.reset()
    body = client.get(STATUS_URL, HTTP_X_CRON_TOKEN=SECRET).json()
    section = body["alarm"]
    assert section["state"] == "down"
    assert section["message"].startswith("Cron is down and jobs are waiting")
    assert section["expectedIntervalMinutes"] == 5
    assert section["graceMinutes"] == 5
    assert section["lastDrainAt"] is not None
    assert isinstance(section["oldestQueuedJobAgeS"], int)
    assert section["oldestQueuedJobAgeByQueue"].keys() == {"dsar-jobs"}
    # 4 per enabled queue (depths) + LINDEX and HGET for the one non-empty
    # queue; recording the change (and notifying) reused that read.
    assert body["redisCommands"] == 22
    assert wire.billed() == 22
    assert ConsoleSettings.objects.get(pk=1).alarm_state == "down"


@pytest.mark.django_db(transaction=True)
def test_an_idle_status_call_costs_what_it_did_before_the_alarm(
    client, cron_secret, wire
):
    body = client.get(STATUS_URL, HTTP_X_CRON_TOKEN=SECRET).json()
    assert body["alarm"]["state"] == "unknown"
    assert body["alarm"]["oldestQueuedJobAgeS"] is None
    assert body["alarm"]["backlogKnown"] is True
    assert body["redisCommands"] == 20
    assert wire.billed() == 20
