"""docs/openapi.json stays in step with the URLs and the statuses we answer."""

from __future__ import annotations

import json

from django.conf import settings
from django.urls import get_resolver


def load() -> dict:
    return json.loads((settings.BASE_DIR / "docs" / "openapi.json").read_text())


def test_every_cron_endpoint_is_documented_and_nothing_else():
    routes = {
        "/" + str(p.pattern)
        for p in get_resolver().url_patterns
        if str(p.pattern).startswith("api/v1/cron/")
    }
    assert set(load()["paths"]) == routes


def test_the_drain_endpoint_documents_every_status_it_answers():
    responses = load()["paths"]["/api/v1/cron/drain-queues"]["post"]["responses"]
    assert set(responses) == {
        "200",
        "400",
        "401",
        "403",
        "405",
        "409",
        "413",
        "415",
        "429",
        "500",
        "503",
    }


def test_the_other_endpoints_document_every_status_they_answer():
    paths = load()["paths"]
    for path, method in (
        ("/api/v1/cron/status", "get"),
        ("/api/v1/cron/prune", "post"),
    ):
        assert set(paths[path][method]["responses"]) == {
            "200",
            "400",
            "401",
            "403",
            "405",
            "413",
            "429",
            "500",
            "503",
        }, path


def test_integer_options_are_bounded_as_the_endpoint_checks_them():
    from ops.engine.drain_options import MAX_INTEGER

    schema = load()["components"]["schemas"]["DrainOptions"]["properties"]
    for name in ("maxDurationMs", "maxConcurrentQueues"):
        assert (schema[name]["minimum"], schema[name]["maximum"]) == (1, MAX_INTEGER)
