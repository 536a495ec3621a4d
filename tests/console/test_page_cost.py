"""Every admin page says in its footer what it cost in Redis commands."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def footer_cost(html: str) -> int:
    match = re.search(r'id="ops-page-cost"[^>]*>This page spent (\d+) Redis', html)
    assert match, "no page-cost footer"
    return int(match.group(1))


@pytest.mark.parametrize(
    "url",
    [
        "/admin/ops/drainrun/",
        "/admin/ops/tokenversion/",
        "/admin/ops/commandusage/quota/",
    ],
)
def test_pages_that_do_not_touch_redis_say_zero(admin_client, wire, url):
    response = admin_client.get(url)
    assert response.status_code == 200
    assert footer_cost(response.content.decode()) == 0
    assert wire.billed() == 0


def test_the_queue_list_says_what_its_live_depths_cost(admin_client, wire):
    html = admin_client.get("/admin/ops/queue/").content.decode()
    assert footer_cost(html) == wire.billed() == 4 * 5


def test_the_home_page_says_what_its_backlog_read_cost(admin_client, wire):
    # One SORT per queue (ops/inspection/backlog.py); tests/console/test_home.py
    # has the rest.
    html = admin_client.get("/admin/").content.decode()
    assert footer_cost(html) == wire.billed() == 5


def test_the_redis_switch_page_says_what_it_cost(admin_client, wire):
    html = admin_client.get("/admin/ops/queue/redis-switch/").content.decode()
    assert footer_cost(html) == wire.billed() == 6 * 5 + 2


def test_the_login_page_has_no_footer(client):
    html = client.get("/admin/login/").content.decode()
    assert "ops-page-cost" not in html
