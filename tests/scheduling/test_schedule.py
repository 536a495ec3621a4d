"""The built-in schedule: Schedule rows in step with ConsoleSettings, missed
slots, the scheduled drain task, `manage.py schedule` and the admin page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule
from django_q.scheduler import scheduler

from ops import tasks
from ops.engine.enqueue import enqueue_canaries
from ops.models import ConsoleSettings, DrainRun
from ops.runtime import console_settings
from ops.scheduling import alarm, schedule

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PAGE = "/admin/ops/consolesettings/schedule/"
QUEUE_COUNT = 5  # the runbook's queues (migration 0002)


def configure(**values: object) -> ConsoleSettings:
    console_settings()
    ConsoleSettings.objects.filter(pk=1).update(**values)
    return ConsoleSettings.objects.get(pk=1)


def rows() -> dict[str, Schedule]:
    return {row.name: row for row in Schedule.objects.all()}


# --- sync ---------------------------------------------------------------------


@pytest.mark.django_db
def test_first_start_takes_the_schedule_from_the_environment(settings):
    settings.DRAIN_SCHEDULE_MINUTES = 7
    result = schedule.sync(now=NOW)
    row = console_settings()
    assert (row.schedule_enabled, row.schedule_minutes) == (True, 7)
    assert (result.drain, result.alarm) == ("created", "created")
    drain = rows()[schedule.DRAIN_SCHEDULE]
    assert drain.func == "ops.tasks.scheduled_drain"
    assert drain.schedule_type == Schedule.MINUTES
    assert drain.minutes == 7
    assert drain.repeats == -1
    assert drain.next_run == NOW + timedelta(minutes=7)
    alarm = rows()[schedule.ALARM_SCHEDULE]
    assert alarm.func == "ops.tasks.check_alarm"
    assert alarm.minutes == 1
    assert alarm.next_run == NOW + timedelta(minutes=1)


@pytest.mark.django_db
def test_a_zero_environment_default_means_off(settings):
    settings.DRAIN_SCHEDULE_MINUTES = 0
    result = schedule.sync(now=NOW)
    assert (result.drain, result.alarm) == ("absent", "absent")
    assert not result.cluster_needed
    assert Schedule.objects.count() == 0


@pytest.mark.django_db
def test_sync_is_idempotent_and_keeps_next_run():
    schedule.sync(now=NOW)
    later = NOW + timedelta(minutes=3)
    result = schedule.sync(now=later)
    assert (result.drain, result.alarm) == ("unchanged", "unchanged")
    # A cluster restart (which syncs) must not push the next drain out.
    assert rows()[schedule.DRAIN_SCHEDULE].next_run == NOW + timedelta(minutes=5)
    assert Schedule.objects.count() == 2


@pytest.mark.django_db
def test_changing_the_interval_updates_the_row_and_realigns_next_run():
    schedule.sync(now=NOW)
    configure(schedule_minutes=15)
    later = NOW + timedelta(minutes=2)
    result = schedule.sync(now=later)
    assert result.drain == "updated"
    drain = rows()[schedule.DRAIN_SCHEDULE]
    assert drain.minutes == 15
    assert drain.next_run == later + timedelta(minutes=15)


@pytest.mark.django_db
def test_disabling_deletes_the_drain_row_and_the_alarm_check_without_interval():
    schedule.sync(now=NOW)
    configure(schedule_enabled=False)
    result = schedule.sync(now=NOW)
    assert (result.drain, result.alarm) == ("deleted", "deleted")
    assert Schedule.objects.count() == 0
    assert schedule.sync(now=NOW).drain == "absent"


@pytest.mark.django_db
def test_an_external_interval_keeps_the_alarm_check_without_the_schedule():
    configure(schedule_enabled=False, expected_interval_minutes=10)
    result = schedule.sync(now=NOW)
    assert (result.drain, result.alarm) == ("absent", "created")
    assert result.cluster_needed
    assert set(rows()) == {schedule.ALARM_SCHEDULE}


@pytest.mark.django_db
def test_sync_repairs_rows_edited_elsewhere():
    schedule.sync(now=NOW)
    drain = rows()[schedule.DRAIN_SCHEDULE]
    Schedule.objects.filter(pk=drain.pk).update(repeats=0, func="x.y")
    Schedule.objects.create(
        name=schedule.DRAIN_SCHEDULE, func="ops.tasks.scheduled_drain", minutes=5
    )
    assert schedule.sync(now=NOW).drain == "updated"
    fixed = Schedule.objects.get(name=schedule.DRAIN_SCHEDULE)  # one row again
    assert (fixed.pk, fixed.func, fixed.repeats) == (
        drain.pk,
        "ops.tasks.scheduled_drain",
        -1,
    )


@pytest.mark.django_db
def test_update_settings_moves_updated_only_when_something_changed():
    row = configure(updated=NOW)
    schedule.update_settings(
        enabled=row.schedule_enabled,
        minutes=row.schedule_minutes,
        expected_interval_minutes=None,
        alarm_grace_minutes=None,
    )
    assert ConsoleSettings.objects.get(pk=1).updated == NOW
    schedule.update_settings(
        enabled=True, minutes=9, expected_interval_minutes=None, alarm_grace_minutes=3
    )
    changed = ConsoleSettings.objects.get(pk=1)
    assert changed.updated != NOW  # the alarm was reconfigured just now
    assert (changed.schedule_minutes, changed.alarm_grace_minutes) == (9, 3)
    assert rows()[schedule.DRAIN_SCHEDULE].minutes == 9


# --- Missed slots ------------------------------------------------------------


def _queued_funcs() -> list[str]:
    return [OrmQ.objects.get(pk=pk).task["func"] for pk in _queued_ids()]


def _queued_ids() -> list[int]:
    return list(OrmQ.objects.order_by("pk").values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_missed_slots_after_downtime_run_once():
    assert Conf.CATCH_UP is False  # Q_CLUSTER["catch_up"] in kaireon/settings.py
    schedule.sync()
    # Down for 30 minutes: six 5-minute slots missed.
    Schedule.objects.filter(name=schedule.DRAIN_SCHEDULE).update(
        next_run=timezone.now() - timedelta(minutes=30)
    )
    scheduler(broker=get_broker())  # one pass of the cluster's scheduler
    assert _queued_funcs() == ["ops.tasks.scheduled_drain"]
    assert rows()[schedule.DRAIN_SCHEDULE].next_run > timezone.now()
    scheduler(broker=get_broker())  # later passes owe nothing
    assert len(_queued_ids()) == 1


@pytest.mark.django_db(transaction=True)
def test_with_catch_up_the_same_downtime_would_queue_every_missed_slot(monkeypatch):
    # Why the setting matters: django-q2's default replays the missed slots,
    # one more drain per scheduler pass (~30 s) until next_run is in the future.
    monkeypatch.setattr(Conf, "CATCH_UP", True)
    schedule.sync()
    Schedule.objects.filter(name=schedule.DRAIN_SCHEDULE).update(
        next_run=timezone.now() - timedelta(minutes=30) + timedelta(seconds=30)
    )
    for _ in range(8):
        scheduler(broker=get_broker())
    assert _queued_funcs() == ["ops.tasks.scheduled_drain"] * 6


# --- The task -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_scheduled_drain_records_a_schedule_run_and_processes_jobs():
    configure(schedule_enabled=True)
    enqueue_canaries("batch-jobs", kind="noop", count=1)
    result = tasks.scheduled_drain()
    run = DrainRun.objects.get()
    assert run.trigger == DrainRun.Trigger.SCHEDULE
    assert run.status == DrainRun.Status.SUCCEEDED
    assert run.total_processed == 1
    assert run.caller.startswith("schedule ") and " pid " in run.caller
    assert result["runId"] == str(run.public_id)
    assert result["totalProcessed"] == 1


@pytest.mark.django_db
def test_a_task_left_queued_after_the_schedule_was_turned_off_does_nothing(wire):
    configure(schedule_enabled=False)
    assert tasks.scheduled_drain() == {"skipped": "the built-in schedule is off"}
    assert DrainRun.objects.count() == 0
    assert wire.billed() == 0


# --- manage.py schedule ---------------------------------------------------------


@pytest.mark.django_db
def test_the_command_turns_the_schedule_on_and_off(capsys):
    call_command("schedule", "--every", "12")
    assert console_settings().schedule_minutes == 12
    assert rows()[schedule.DRAIN_SCHEDULE].minutes == 12
    call_command("schedule", "--off")
    assert console_settings().schedule_enabled is False
    assert schedule.DRAIN_SCHEDULE not in rows()
    out = capsys.readouterr().out
    assert "schedule on, every 12 min" in out and "schedule: off" in out


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["0", "1441", "abc", "-3", "2.5"])
def test_the_command_refuses_a_bad_interval(bad):
    console_settings()
    before = ConsoleSettings.objects.get(pk=1).schedule_minutes
    with pytest.raises(CommandError, match="--every") as caught:
        call_command("schedule", "--every", bad)
    assert caught.value.returncode == 2
    assert ConsoleSettings.objects.get(pk=1).schedule_minutes == before


def test_the_run_script_steps_work_in_a_fresh_process(manage_py):
    synced = manage_py("schedule", "--sync")
    assert synced.returncode == 0, synced.stderr
    assert "kaireon-drain: created" in synced.stdout
    needed = manage_py("schedule", "--needs-cluster")
    assert needed.returncode == 0, needed.stderr
    off = manage_py("schedule", "--off")
    assert off.returncode == 0, off.stderr
    # The alarm outlives the schedule: its check still needs a cluster.
    assert "the alarm now expects an external scheduler every 5 min" in off.stdout
    assert manage_py("schedule", "--needs-cluster").returncode == 0
    assert manage_py("schedule", "--off", "--no-alarm").returncode == 0
    not_needed = manage_py("schedule", "--needs-cluster")
    assert not_needed.returncode == 3, not_needed.stdout + not_needed.stderr


# --- The admin page ---------------------------------------------------------------


def _client(*codenames: str) -> Client:
    user = User.objects.create_user(
        f"user-{len(codenames)}-{'-'.join(codenames)}"[:150],
        password="pw",
        is_staff=True,
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="ops", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_page_shows_schedule_and_alarm_and_its_redis_cost(wire):
    schedule.sync()
    client = _client("view_consolesettings")
    wire.reset()
    response = client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "on, every 5 min" in html
    assert 'id="ops-alarm-state"' in html and "unknown" in html
    assert 'id="ops-next-run"' in html
    # Five empty queues: one LINDEX each, no HGET.
    assert wire.billed() == QUEUE_COUNT
    assert f"cost {QUEUE_COUNT} Redis commands" in html
    # A viewer sees no form.
    assert 'id="schedule_form"' not in html
    assert "ops.change_consolesettings" in html


@pytest.mark.django_db
def test_the_changelist_and_change_form_lead_to_the_page():
    client = _client("view_consolesettings")
    assert client.get("/admin/ops/consolesettings/").url == PAGE
    assert client.get("/admin/ops/consolesettings/1/change/").url == PAGE


@pytest.mark.django_db
def test_the_page_needs_the_view_permission():
    client = _client("view_drainrun")
    assert client.get(PAGE).status_code == 403
    assert client.get("/admin/ops/consolesettings/").status_code == 403


@pytest.mark.django_db
def test_changing_needs_the_change_permission():
    schedule.sync()
    client = _client("view_consolesettings")
    response = client.post(PAGE, {"schedule_enabled": "", "schedule_minutes": "30"})
    assert response.status_code == 403
    assert console_settings().schedule_enabled is True


@pytest.mark.django_db
def test_a_change_is_saved_and_synced():
    schedule.sync()
    client = _client("change_consolesettings")
    response = client.post(
        PAGE,
        {
            "schedule_enabled": "on",
            "schedule_minutes": "30",
            "expected_interval_minutes": "",
            "alarm_grace_minutes": "10",
        },
    )
    assert response.status_code == 302 and response.url == PAGE
    row = console_settings()
    assert (row.schedule_minutes, row.alarm_grace_minutes) == (30, 10)
    assert row.updated_by is not None
    assert rows()[schedule.DRAIN_SCHEDULE].minutes == 30
    page = client.get(PAGE).content.decode()
    assert "Saved." in page and 'id="schedule_form"' in page

    client.post(
        PAGE,
        {"schedule_minutes": "30", "expected_interval_minutes": "15"},
    )
    assert schedule.DRAIN_SCHEDULE not in rows()
    assert console_settings().expected_interval_minutes == 15


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field, value",
    [
        ("schedule_minutes", "0"),
        ("schedule_minutes", "1441"),
        ("schedule_minutes", "abc"),
        ("schedule_minutes", ""),
        ("expected_interval_minutes", "-5"),
        ("alarm_grace_minutes", "99999999999999999999"),
    ],
)
def test_bad_input_is_a_form_error_and_changes_nothing(field, value):
    schedule.sync(now=NOW)
    before = ConsoleSettings.objects.values().get(pk=1)
    schedule_before = list(Schedule.objects.values().order_by("pk"))
    client = _client("change_consolesettings")
    data = {"schedule_enabled": "on", "schedule_minutes": "20", field: value}
    response = client.post(PAGE, data)
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert "errornote" in response.content.decode()
    after = ConsoleSettings.objects.values().get(pk=1)
    # The page view may record an alarm state; the settings are untouched.
    for key in ("alarm_state", "alarm_changed_at"):
        before.pop(key)
        after.pop(key)
    assert after == before
    assert list(Schedule.objects.values().order_by("pk")) == schedule_before


@pytest.mark.django_db
def test_a_schedule_change_leaves_an_entry_in_the_admin_log():
    from django.contrib.admin.models import LogEntry

    schedule.sync()
    client = _client("change_consolesettings")
    client.post(PAGE, {"schedule_enabled": "on", "schedule_minutes": "15"})
    entry = LogEntry.objects.get()
    assert "minutes=15" in entry.get_change_message()
    assert entry.user.username


# --- The schedule and the alarm are separate choices -------------------------------


@pytest.mark.django_db
def test_turning_the_schedule_off_keeps_the_alarm_watching():
    configure(schedule_enabled=True, schedule_minutes=10)
    schedule.sync()
    result = schedule.update_settings(
        enabled=False,
        minutes=10,
        expected_interval_minutes=None,
        alarm_grace_minutes=None,
    )
    assert result.kept_alarm_minutes == 10
    row = console_settings()
    assert row.expected_interval_minutes == 10
    assert alarm.alarm_config(row).configured
    # The drain schedule went, the alarm check stayed.
    assert set(rows()) == {schedule.ALARM_SCHEDULE}


@pytest.mark.django_db
def test_only_an_explicit_choice_turns_the_alarm_off():
    configure(schedule_enabled=True, schedule_minutes=10)
    schedule.sync()
    result = schedule.update_settings(
        enabled=False,
        minutes=10,
        expected_interval_minutes=None,
        alarm_grace_minutes=None,
        alarm_off=True,
    )
    assert result.kept_alarm_minutes is None
    assert not alarm.alarm_config(console_settings()).configured
    assert rows() == {}


@pytest.mark.django_db
def test_the_page_refuses_to_drop_the_alarm_with_the_schedule_unasked():
    configure(schedule_enabled=True, schedule_minutes=10)
    schedule.sync()
    client = _client("view_consolesettings", "change_consolesettings")
    response = client.post(PAGE, {"schedule_minutes": "10"})  # schedule unticked
    assert response.status_code == 200
    assert "expected_interval_minutes" in response.context["form"].errors
    assert "No missed-tick alarm" in response.content.decode()
    assert console_settings().schedule_enabled is True  # nothing changed

    response = client.post(PAGE, {"schedule_minutes": "10", "alarm_off": "on"})
    assert response.status_code == 302
    row = console_settings()
    assert (row.schedule_enabled, row.expected_interval_minutes) == (False, None)
    assert not alarm.alarm_config(row).configured


@pytest.mark.django_db
def test_the_command_keeps_the_alarm_unless_told(capsys):
    call_command("schedule", "--every", "7")
    call_command("schedule", "--off")
    assert console_settings().expected_interval_minutes == 7
    assert "expects an external scheduler every 7 min" in capsys.readouterr().out
    call_command("schedule", "--off", "--no-alarm")
    assert not alarm.alarm_config(console_settings()).configured
    with pytest.raises(CommandError, match="--no-alarm goes with --off"):
        call_command("schedule", "--no-alarm")
