"""The one human format for times (ops/humanize.py) and its template filters."""

from __future__ import annotations

import pytest
from django.template import Context, Template

from ops.humanize import duration, duration_ms


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.35, "350 ms"),
        (0.9996, "1 s"),
        (4.24, "4.2 s"),
        (4.0, "4 s"),
        (45.7, "45 s"),
        (119, "119 s"),
        (120, "2 min"),
        (2833, "47 min"),
        (3 * 3600 + 300, "3 h 5 min"),
        (2 * 86400 + 4 * 3600, "2 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_a_duration_reads_in_the_largest_exact_enough_unit(seconds, text):
    assert duration(seconds) == text


def test_milliseconds_read_the_same_way():
    texts = [duration_ms(ms) for ms in (12, 4200, 180_000)]
    assert texts == ["12 ms", "4.2 s", "3 min"]


def test_the_template_filters_show_a_dash_for_nothing():
    page = Template(
        "{% load ops_format %}{{ a|duration }}|{{ b|duration_ms }}|{{ c|duration_ms }}"
    )
    assert page.render(Context({"a": 2833, "b": 350, "c": None})) == "47 min|350 ms|-"
