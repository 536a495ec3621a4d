"""The project's Redis client: silent connects, every command counted."""

from __future__ import annotations

from ops.usage.redis_client import CommandMeter, close_client, make_client


def test_connecting_sends_no_handshake(wire):
    client = make_client(CommandMeter())
    client.get("anything")
    close_client(client)
    # redis-py 8's default would add HELLO, CLIENT MAINT_NOTIFICATIONS and two
    # CLIENT SETINFO here.
    assert wire.snapshot() == {"AUTH": 1, "GET": 1}


def test_the_meter_counts_each_command_of_a_pipeline_and_a_transaction(wire):
    meter = CommandMeter()
    client = make_client(meter)
    with client.pipeline(transaction=False) as pipe:
        pipe.set("a", 1).incr("a").get("a")
        pipe.execute()
    with client.pipeline() as pipe:
        pipe.set("b", 1).get("b")
        pipe.execute()
    close_client(client)
    assert meter.by_command["MULTI"] == 1
    assert meter.by_command["EXEC"] == 1
    assert meter.billed == 3 + 4
    assert meter.total == meter.billed + 1  # AUTH
    assert wire.billed() == meter.billed
    assert wire.snapshot() == meter.by_command
