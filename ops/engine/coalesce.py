"""Fewer billed commands for the same writes: RQ's own methods write a job's
outcome into a redis-py pipeline, and this module merges what it queued before
anything is sent.

RQ's success path alone sends `HSET status` and then `HSET <all fields>` to the
same key, `EXPIRE`s three keys of which two usually do not exist, and one `ZADD`
per job to a registry. Merged: one `HSET` per key, no `EXPIRE` of a key known to
be absent, and registry `ZADD`s of many jobs in one command. Only writes that
commute are merged (same key, nothing else touching that key in between), so
Redis ends in exactly the state RQ's own commands would leave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Command = tuple[tuple[Any, ...], dict[str, Any]]

# ZADD flags after which the arguments are not plain (score, member) pairs.
_ZADD_FLAGS = {b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"}


def _name(args: tuple[Any, ...]) -> str:
    name = args[0]
    return (name.decode() if isinstance(name, bytes) else str(name)).upper()


def _key(args: tuple[Any, ...]) -> str:
    key = args[1]
    return key.decode() if isinstance(key, bytes) else str(key)


def _plain_zadd(args: tuple[Any, ...]) -> bool:
    return not any(
        (a.encode() if isinstance(a, str) else a) in _ZADD_FLAGS
        for a in args[2:]
        if isinstance(a, str | bytes)
    )


class _Hset:
    """An HSET whose fields later HSETs on the same key are folded into."""

    def __init__(self, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        self.key = args[1]
        self.fields: dict[Any, Any] = {}
        self.options = options
        self.extend(args)

    def extend(self, args: tuple[Any, ...]) -> None:
        pairs = args[2:]
        for field, value in zip(pairs[::2], pairs[1::2], strict=True):
            self.fields.pop(field, None)  # the last write of a field wins
            self.fields[field] = value

    def command(self) -> Command:
        flat: list[Any] = []
        for field, value in self.fields.items():
            flat += [field, value]
        return ("HSET", self.key, *flat), self.options


class _Zadd:
    def __init__(self, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        self.key = args[1]
        self.pairs: list[Any] = list(args[2:])
        self.options = options

    def extend(self, args: tuple[Any, ...]) -> None:
        self.pairs += list(args[2:])

    def command(self) -> Command:
        return ("ZADD", self.key, *self.pairs), self.options


def coalesce(
    commands: Iterable[Command], *, absent: Callable[[str], bool] = lambda key: False
) -> list[Command]:
    """The same writes in fewer commands.

    `absent(key)` says a key is known not to exist: an `EXPIRE` of it is a no-op
    and is dropped. Commands other than HSET, plain ZADD and EXPIRE pass
    through unchanged and in order.
    """
    out: list[Command | _Hset | _Zadd] = []
    last: dict[str, int] = {}  # key -> index in `out` of the last entry touching it
    for args, options in commands:
        name = _name(args)
        key = _key(args) if len(args) > 1 else ""
        previous = out[last[key]] if key in last else None
        if name == "HSET" and isinstance(previous, _Hset):
            previous.extend(args)
            continue
        if name == "ZADD" and _plain_zadd(args) and isinstance(previous, _Zadd):
            previous.extend(args)
            continue
        if name == "EXPIRE" and absent(key):
            continue
        if name == "HSET":
            entry: Command | _Hset | _Zadd = _Hset(args, options)
        elif name == "ZADD" and _plain_zadd(args):
            entry = _Zadd(args, options)
        else:
            entry = (args, options)
        out.append(entry)
        # A multi-key command touches all its keys; for the ones merged here
        # (single-key) the key is args[1].
        touched = [key] if name in {"HSET", "ZADD", "EXPIRE"} else _all_keys(args)
        for k in touched:
            last[k] = len(out) - 1
    return [e.command() if isinstance(e, _Hset | _Zadd) else e for e in out]


def _all_keys(args: tuple[Any, ...]) -> list[str]:
    """Every argument that could be a key: conservative, so that nothing is
    merged across a command that might touch the same key."""
    return [a.decode() if isinstance(a, bytes) else str(a) for a in args[1:]]
