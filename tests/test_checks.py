from __future__ import annotations

import pytest
from django.core.checks import run_checks

from ops.models import Queue

pytestmark = pytest.mark.django_db


def test_it_warns_when_no_queue_is_enabled():
    Queue.objects.update(enabled=False)
    ids = [m.id for m in run_checks(databases=["default"])]
    assert "ops.W001" in ids


def test_it_is_quiet_when_a_queue_is_enabled():
    ids = [m.id for m in run_checks(databases=["default"])]
    assert "ops.W001" not in ids
