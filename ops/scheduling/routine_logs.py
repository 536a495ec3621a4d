"""Keeping the minute-by-minute alarm check out of the INFO log.

django-q2 logs every task it runs at INFO on its "django-q" logger: for the
alarm check, once a minute, "Enqueued [...]", "created task ... from schedule
[kaireon-alarm]", "processing ... 'ops.tasks.check_alarm'" and "Processed
'ops.tasks.check_alarm'": four lines a minute that bury the ones that matter.
This filter (installed on that logger by kaireon/settings.py's LOGGING) turns
them into DEBUG records: shown with LOG_LEVEL=DEBUG, dropped otherwise. A
change of the alarm's state is logged by ops/scheduling/notify.py at INFO or
WARNING, so nothing a person acts on is lost. "Enqueued" lines never say which
task they are about, so they are DEBUG for every task; the drain's own lines
("created task ... [kaireon-drain]", "Processed ...") stay at INFO.

No Django import: the logging configuration loads it before the apps.
"""

from __future__ import annotations

import logging

# Owned here (ops/scheduling/schedule.py uses them): the logging configuration
# must be able to import them before Django's apps load.
ALARM_SCHEDULE = "kaireon-alarm"
ALARM_FUNC = "ops.tasks.check_alarm"


def is_routine(message: str) -> bool:
    """A django-q2 INFO line about the alarm check, or an "Enqueued" line."""
    return (
        ALARM_FUNC in message
        or f"[{ALARM_SCHEDULE}]" in message
        or message.startswith("Enqueued [")
    )


class QuietAlarmRoutine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not is_routine(record.getMessage()):
            return True
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        # The logger let it through as INFO; as DEBUG it goes on only where
        # DEBUG is wanted.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
