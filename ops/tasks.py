"""The functions django-q2 runs for the built-in schedule (see
ops/scheduling/schedule.py). Their import path is stored in django-q2's rows, so
this module stays at the top of `ops`.

They run in a qcluster worker process and return small JSON-able dicts, which
django-q2 keeps in its Success/Failure tables (Q_CLUSTER["save_limit"]).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from typing import Any

from ops.engine.drain import drain
from ops.engine.drain_options import parse_options
from ops.engine.results import drain_result
from ops.models import DrainRun, Source
from ops.runtime import console_settings
from ops.scheduling import events
from ops.scheduling.notify import check

log = logging.getLogger(__name__)


def scheduled_drain() -> dict[str, Any]:
    """One drain with the default options, as the cron endpoint would run it."""
    if not console_settings().schedule_enabled:
        # A task queued just before the schedule was turned off: the admin
        # said no more scheduled drains, so this one does nothing.
        log.info("built-in schedule is off; not draining")
        return {"skipped": "the built-in schedule is off"}
    run = drain(
        trigger=DrainRun.Trigger.SCHEDULE,
        options=parse_options(),
        caller=f"schedule {socket.gethostname()} pid {os.getpid()}",
    )
    return drain_result(run)


def check_alarm(now: datetime | None = None) -> dict[str, Any]:
    """The missed-tick alarm, every minute: database only unless a notification
    goes out (then ≤ 2 Redis commands per enabled queue for the backlog age).

    Also sends the other alerts (quota thresholds, quota incidents, failed
    jobs; ops/scheduling/events.py, database only), each once; "alerts" lists
    the channels anything went to (the alarm's console-managed channels too),
    when any did.

    django-q2 calls it without arguments; `now` is for tests."""
    transition = check(now=now, source=Source.OTHER)
    deliveries = [*(transition.channels if transition else ()), *events.check(now=now)]
    sent = [{"channel": d.channel, "result": d.result} for d in deliveries]
    extra: dict[str, Any] = {"alerts": sent} if sent else {}
    if transition is None:
        # The routine case, every minute: DEBUG. A change is logged by
        # notify.check (INFO, or WARNING when it notifies).
        log.debug("missed-tick alarm checked: state unchanged")
        return {"changed": False, **extra}
    return {
        **extra,
        "changed": True,
        "previous": transition.previous,
        "state": transition.state,
        "notified": transition.notified,
        "webhook": transition.webhook,
        "email": transition.email,
    }
