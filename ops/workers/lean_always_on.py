"""An always-on worker process on the lean executor (ops/engine/lean_worker.py).

Started and watched by ops/workers/supervisor.py when DRAIN_EXECUTOR is "lean";
it reports on --report-fd with the same lines as the RQ-based worker
(ops/workers/always_on_worker.py), so the supervisor books it the same way.

Waiting for work costs one command per wake-up and nothing in between:

* one queue: `BLMOVE q q LEFT LEFT <block>` — blocks until the queue has a
  job and moves it onto itself, i.e. leaves it where it is: the job never
  leaves Redis before the executor's crash-safe claim takes it;
* several queues: `BLMPOP <block> n q1..qn LEFT` pops the first job of the
  first non-empty queue, and `LPUSH` puts it straight back at the front. A
  process killed between those two commands loses that one job id — the same
  window `rq worker` has when it listens on several queues (it BLPOPs); run
  `manage.py work --per-queue` to close it.

Then it drains the queue that woke it with the lean executor and waits again;
while another queue has jobs, the wait returns at once (first queue first).
No heartbeat, no worker key and no registry maintenance in Redis: the
supervisor keeps the worker's state in the database.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import IO, Any

import redis

from ops.engine import children
from ops.engine.lean_worker import LeanExecutor, claim_key_for
from ops.usage.quota_errors import is_quota_exhausted


class _Stop(Exception):
    """SIGTERM while waiting: leave at once (nothing is claimed)."""


class LeanAlwaysOn:
    def __init__(
        self,
        client: redis.Redis,
        queues: list[str],
        worker_name: str,
        block_s: int,
        report: IO[str],
        meter: Any,
    ) -> None:
        self.client = client
        self.queues = queues
        self.worker_name = worker_name
        self.block_s = block_s
        self.report = report
        self.meter = meter
        self.stopping = False
        self.busy = False
        # The blocking wait outlasts REDIS_SOCKET_TIMEOUT_S: let the socket
        # wait as long as the block (as rq's Worker does for its BLPOP).
        kwargs = client.connection_pool.connection_kwargs
        if (kwargs.get("socket_timeout") or 0) < block_s + 10:
            kwargs["socket_timeout"] = block_s + 10

    def _emit(self, line: str) -> None:
        try:
            self.report.write(line + "\n")
            self.report.flush()
        except (BrokenPipeError, ValueError):
            pass  # the supervisor is gone; PDEATHSIG ends us shortly

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        # Warm stop: a running job finishes, the rest of its batch goes back
        # to the queue (LeanExecutor.should_stop); an idle wait ends now.
        self.stopping = True
        if not self.busy:
            raise _Stop

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        try:
            while not self.stopping:
                self._emit(f"idle {self.meter.billed} {self.meter.total}")
                try:
                    name = self._wait()
                    if name is None:
                        continue  # the block timed out: wait again
                    self.busy = True
                    self._drain(name)
                    self.busy = False
                except redis.ResponseError as exc:
                    if is_quota_exhausted(exc):
                        self._emit(f"quota {exc}")
                    raise
        except _Stop:
            pass

    def _wait(self) -> str | None:
        """Block until one of the queues has a job; the first such queue in
        priority order (the order of --queues), or None when the block ended.
        The queue is drained, then the wait starts again: it returns at once
        while another queue has jobs, for 2 commands instead of an empty
        claim's 6."""
        keys = [f"rq:queue:{name}" for name in self.queues]
        if len(keys) == 1:
            moved = self.client.blmove(keys[0], keys[0], self.block_s, "LEFT", "LEFT")
            return self.queues[0] if moved is not None else None
        popped = self.client.blmpop(self.block_s, len(keys), *keys, direction="LEFT")
        if not popped:
            return None
        key, ids = popped
        self.client.lpush(key, *reversed(ids))
        return self.queues[keys.index(key.decode())]

    def _drain(self, name: str) -> None:
        if not self.stopping:
            executor = LeanExecutor(
                client=self.client,
                queue_name=name,
                worker_name=self.worker_name,
                claim_key=claim_key_for(self.worker_name),
                report=self._emit,
                meter=self.meter,
                should_stop=lambda: self.stopping,
                watch_stops=True,  # the console's Stop (ops/engine/stop.py)
            )
            executor.run()


def main(argv: list[str] | None = None) -> int:
    parser = children.child_parser("ops.workers.lean_always_on", always_on=True)
    args = parser.parse_args(argv)
    report, meter, client = children.start_child(args, "worker")
    worker = LeanAlwaysOn(
        client, args.queues.split(","), args.worker_name, args.block_s, report, meter
    )
    worker.run()
    children.report_done(report, meter)
    return 0


if __name__ == "__main__":
    sys.exit(main())
