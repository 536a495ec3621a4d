"""Durations for people, in one format everywhere (pages, alarm messages,
notifications): "350 ms", "4.2 s", "45 s", "47 min", "3 h 5 min", "2 d 4 h".

Machine output (the cron API's JSON, `--json`, metrics) keeps its documented
units (`durationMs`, `...AgeS`); this is for what a person reads."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Milliseconds below a second, tenths of a second below ten, seconds
    below two minutes, minutes below two hours, then hours and minutes, then
    days and hours: the largest unit that still reads exactly enough for an
    on-call decision (a drain of 350 ms is not "0 s")."""
    seconds = max(0.0, float(seconds))
    if seconds > 0 and round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        tenths = f"{seconds:.1f}".removesuffix(".0")
        return f"{tenths} s"
    whole = int(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def duration_ms(ms: float) -> str:
    """`duration` of a time kept in milliseconds (drain runs, job records)."""
    return duration(ms / 1000)
