"""Template filters for the console's pages: `{% load ops_format %}`."""

from __future__ import annotations

from django import template

from ops.humanize import duration as duration_text

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    """`{{ age_s|duration }}`: "47 min" (ops/humanize.py); "-" for None."""
    if seconds is None or seconds == "":
        return "-"
    try:
        return duration_text(float(seconds))
    except (TypeError, ValueError):
        return "-"


@register.filter
def duration_ms(ms: float | None) -> str:
    """`{{ job.duration_ms|duration_ms }}`: "350 ms", "4.2 s" (ops/humanize.py);
    "-" for None."""
    if ms is None or ms == "":
        return "-"
    try:
        return duration_text(float(ms) / 1000)
    except (TypeError, ValueError):
        return "-"
