"""Durations for people, in one format everywhere (pages, alarm messages,
notifications): "45 s", "47 min", "3 h 5 min", "2 d 4 h"."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Seconds below two minutes, minutes below two hours, then hours and
    minutes, then days and hours: the largest unit that still reads exactly
    enough for an on-call decision."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
