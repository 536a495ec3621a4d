from __future__ import annotations

import pytest

from ops.engine.drain_options import DrainOptionError, parse_options
from ops.models import Queue

pytestmark = pytest.mark.django_db


def test_defaults_come_from_settings(settings):
    settings.DRAIN_MAX_DURATION_MS = 45_000
    settings.DRAIN_MAX_CONCURRENT_QUEUES = 3
    options = parse_options()
    assert options.max_duration_ms == 45_000
    assert options.max_concurrent_queues == 3
    assert options.queues == (
        "batch-jobs",
        "dsar-jobs",
        "journey-jobs",
        "retrain-jobs",
        "seed-jobs",
    )
    assert options.clamped == {}


def test_the_default_concurrency_never_exceeds_the_enabled_queues(settings):
    settings.DRAIN_MAX_CONCURRENT_QUEUES = 4
    Queue.objects.exclude(name__in=["batch-jobs", "seed-jobs"]).update(enabled=False)
    assert parse_options().max_concurrent_queues == 2


def test_selected_queues_keep_priority_order_and_drop_duplicates():
    options = parse_options(queues=["seed-jobs", "batch-jobs", "seed-jobs"])
    assert options.queues == ("batch-jobs", "seed-jobs")


def test_query_string_values_are_accepted():
    options = parse_options(
        max_duration_ms="1500", max_concurrent_queues="1", queues="dsar-jobs,seed-jobs"
    )
    assert (options.max_duration_ms, options.max_concurrent_queues) == (1500, 1)
    assert options.queues == ("dsar-jobs", "seed-jobs")


def test_leading_zeros_and_spaces_are_still_an_integer():
    options = parse_options(max_duration_ms=" 0" + "0" * 5000 + "1500 ")
    assert options.max_duration_ms == 1500
    assert parse_options(max_duration_ms=2**53 - 1).max_duration_ms == 600_000


def test_a_duration_over_the_cap_is_clamped_and_recorded():
    options = parse_options(max_duration_ms=1_000_000)
    assert options.max_duration_ms == 600_000
    assert options.clamped == {
        "maxDurationMs": {"requested": 1_000_000, "applied": 600_000}
    }
    assert options.as_params()["clamped"] == options.clamped


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"max_duration_ms": True},
            "maxDurationMs",
            "must be an integer, got a boolean",
        ),
        ({"max_duration_ms": 2.5}, "maxDurationMs", "must be an integer, got float"),
        ({"max_duration_ms": [1]}, "maxDurationMs", "must be an integer, got list"),
        ({"max_duration_ms": "1e3"}, "maxDurationMs", "must be an integer, got '1e3'"),
        ({"max_duration_ms": 0}, "maxDurationMs", "must be at least 1, got 0"),
        ({"max_concurrent_queues": 9}, "maxConcurrentQueues", "between 1 and 5"),
        ({"max_concurrent_queues": -1}, "maxConcurrentQueues", "at least 1"),
        ({"queues": []}, "queues", "must name at least one queue"),
        ({"queues": [1, 2]}, "queues", "must be a list of queue names"),
        ({"queues": {"a": 1}}, "queues", "must be a list of queue names"),
        (
            {"queues": ["ghost"]},
            "queues",
            "unknown queue ghost; valid queues: batch-jobs",
        ),
        # Only ASCII digits: str.isdigit() accepts these and int() refuses or
        # reads them.
        ({"max_duration_ms": "²"}, "maxDurationMs", "must be an integer, got '²'"),
        ({"max_duration_ms": "٣"}, "maxDurationMs", "must be an integer, got '٣'"),
        ({"max_concurrent_queues": "①"}, "maxConcurrentQueues", "an integer"),
        ({"max_duration_ms": "1_000"}, "maxDurationMs", "must be an integer"),
        ({"max_duration_ms": "+5"}, "maxDurationMs", "must be an integer"),
        # Too many digits for int() (and for any JSON reader): refused before.
        ({"max_duration_ms": "1" * 5000}, "maxDurationMs", "at most 9007199254740991"),
        ({"max_duration_ms": "-" + "1" * 5000}, "maxDurationMs", "at least 1"),
        ({"max_duration_ms": 2**53}, "maxDurationMs", "at most 9007199254740991"),
        ({"max_duration_ms": 10**5000}, "maxDurationMs", "at most"),
        ({"max_duration_ms": -(10**5000)}, "maxDurationMs", "at least 1"),
        ({"max_duration_ms": float("inf")}, "maxDurationMs", "got float"),
        ({"max_duration_ms": float("nan")}, "maxDurationMs", "got float"),
        ({"max_duration_ms": 1e300}, "maxDurationMs", "at most"),
    ],
)
def test_bad_values_name_the_field(kwargs, field, message):
    with pytest.raises(DrainOptionError) as excinfo:
        parse_options(**kwargs)
    assert excinfo.value.field == field
    assert message in excinfo.value.message


def test_a_disabled_queue_cannot_be_selected():
    Queue.objects.filter(name="dsar-jobs").update(enabled=False)
    with pytest.raises(DrainOptionError, match="dsar-jobs is disabled"):
        parse_options(queues=["dsar-jobs"])
