"""A running drain's progress, written to its DrainRun row as it goes.

The engine reads its children's `start`/`end` report lines anyway
(ops/engine/drain.py); this writer turns what it has counted into the row's
result columns (processed, failed, an estimate of what is left, Redis commands
so far) and `current_jobs`, so that the run page can show a drain while it
runs by reading the database only.

Bounded: at most one UPDATE per `PROGRESS_INTERVAL_S`, and none when nothing
changed since the last one. The engine offers progress after every batch of
report lines and at least once a second (its select timeout), so a job's end
reaches the row within about a second, however fast jobs end. No Redis command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from ops.models import DrainRun

# One UPDATE a second at most: a drain of thousands of short jobs writes its
# row a few times a minute, not per job.
PROGRESS_INTERVAL_S = 1.0

Counts = dict[str, dict[str, int]]


class ProgressWriter:
    """Throttled progress writes for one run."""

    def __init__(
        self,
        run: DrainRun,
        billed: Callable[[], int],
        *,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run = run
        # The parent's own billed commands so far (its CommandMeter).
        self._billed = billed
        self.interval_s = interval_s
        self._clock = clock
        # queue -> jobs this drain expects to run there: the depth its look
        # found, plus dependents released onto it since.
        self._expected: dict[str, int] = {}
        self._last_at = clock()  # nothing to say before the first interval
        self._last: tuple[object, ...] | None = None
        self.writes = 0

    def expect(self, counts: Mapping[str, int]) -> None:
        """Jobs found (or released) per queue: the base of the `remaining`
        estimate while the drain runs (the final count is the list's length)."""
        for name, n in counts.items():
            self._expected[name] = self._expected.get(name, 0) + n

    def due(self) -> bool:
        return self._clock() - self._last_at >= self.interval_s

    def write(
        self,
        tallies: Mapping[str, Mapping[str, int]],
        current_jobs: Mapping[str, str | None],
        child_billed: int,
    ) -> bool:
        """Write the counts if an interval has passed and they changed.
        `tallies`: queue -> processed/failed so far; `current_jobs`: queue ->
        the job running there (or None); `child_billed`: the children's billed
        commands so far. True when a row was written."""
        if not self.due():
            return False
        results: Counts = {}
        for name, tally in tallies.items():
            processed, failed = tally["processed"], tally["failed"]
            left = max(0, self._expected.get(name, 0) - processed)
            results[name] = {
                "processed": processed,
                "failed": failed,
                "remaining": left,
            }
        running = {name: job for name, job in current_jobs.items() if job}
        commands = self._billed() + child_billed
        state = (results, running, commands)
        self._last_at = self._clock()
        if state == self._last:
            return False
        self._last = state
        self.writes += 1
        return self.run.note_progress(
            queue_results=results, redis_commands=commands, current_jobs=running
        )
