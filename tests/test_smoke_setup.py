from __future__ import annotations

import pytest

from ops.drain import drain
from ops.drain_options import parse_options
from ops.models import DrainRun


@pytest.mark.django_db
def test_an_idle_drain_sends_exactly_one_command_on_the_wire(wire):
    run = drain(trigger=DrainRun.Trigger.CLI, options=parse_options())
    assert run.status == DrainRun.Status.SUCCEEDED
    assert wire.snapshot() == {"AUTH": 1, "EXISTS": 1}
    assert run.redis_commands == 1
