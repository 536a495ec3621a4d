"""The minute-by-minute alarm check stays out of the INFO log: django-q2's own
lines about it become DEBUG (ops/scheduling/routine_logs.py, installed by
kaireon/settings.py's LOGGING), the drain's stay INFO, and a change of the
alarm's state is still logged."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.scheduler import scheduler

from ops import tasks
from ops.models import ConsoleSettings, DrainRun
from ops.scheduling import schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def both_due() -> None:
    """The drain schedule and the alarm check, both due now."""
    ConsoleSettings.objects.create(
        pk=1, schedule_enabled=True, schedule_minutes=5, updated=timezone.now()
    )
    schedule.sync()
    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=5))


def _django_q(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django-q" and r.levelno == level]


# django-q2's scheduler refuses to run inside the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_django_qs_lines_about_the_alarm_check_are_not_info(both_due, caplog) -> None:
    caplog.set_level(logging.INFO)
    scheduler(broker=get_broker())  # django-q2's own scheduler pass
    info = [r.getMessage() for r in _django_q(caplog, logging.INFO)]
    # The drain's task is still announced; nothing about the alarm is.
    assert any("[kaireon-drain]" in line for line in info), info
    assert not any("kaireon-alarm" in line or "check_alarm" in line for line in info)
    assert not any(line.startswith("Enqueued [") for line in info)


@pytest.mark.django_db(transaction=True)
def test_with_log_level_debug_they_are_still_there_as_debug(both_due, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    scheduler(broker=get_broker())
    debug = [r.getMessage() for r in _django_q(caplog, logging.DEBUG)]
    assert any("[kaireon-alarm]" in line for line in debug), debug


def test_a_routine_check_logs_nothing_at_info_and_a_change_does(caplog) -> None:
    ConsoleSettings.objects.create(
        pk=1,
        schedule_enabled=False,
        expected_interval_minutes=5,
        updated=timezone.now() - timedelta(hours=1),
        alarm_state="ok",
    )
    DrainRun.objects.create(trigger="cron", status="succeeded")
    caplog.set_level(logging.INFO)
    assert tasks.check_alarm() == {"changed": False}
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    # An hour with no drain: the state changes, and that is logged.
    result = tasks.check_alarm(now=timezone.now() + timedelta(hours=1))
    assert result["changed"] and result["state"] == "down"
    assert any(
        "alarm state ok -> down" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO
    )


def test_django_q_worker_and_monitor_lines_about_the_alarm_are_debug(caplog) -> None:
    # The messages django-q2's worker and monitor write for a task, through
    # its own logger (django_q.conf.logger): the filter is on that logger.
    from django_q.conf import logger

    caplog.set_level(logging.INFO)
    logger.info(
        "Process-1:1 processing abc-def 'ops.tasks.check_alarm' [kaireon-alarm]"
    )
    logger.info("Processed 'ops.tasks.check_alarm' (abc-def)")
    logger.info("Processed 'ops.tasks.scheduled_drain' (ghi-jkl)")
    info = [r.getMessage() for r in _django_q(caplog, logging.INFO)]
    assert info == ["Processed 'ops.tasks.scheduled_drain' (ghi-jkl)"]
