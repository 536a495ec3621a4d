"""A TCP proxy that counts the Redis commands crossing it, as a per-command-
billed Redis would bill them: every command of a pipeline or MULTI/EXEC, and
commands the server then rejects (Redis 7.0 rejects CLIENT SETINFO).

Used by the test suite and the benchmarks; it only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from types import TracebackType


class _RespCounter:
    """Incremental parser of the client->server RESP stream (arrays of bulk
    strings, and inline commands), recording each command's name."""

    def __init__(self, record: callable) -> None:  # type: ignore[valid-type]
        self.buf = b""
        self.record = record

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._one():
            pass

    def _one(self) -> bool:
        buf = self.buf
        if not buf:
            return False
        if buf[:1] != b"*":  # inline command: one line
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            line = buf[:end].split()
            if line:
                self.record(line[0].decode("ascii", "replace").upper())
            self.buf = buf[end + 2 :]
            return True
        end = buf.find(b"\r\n")
        if end < 0:
            return False
        count = int(buf[1:end])
        pos = end + 2
        name = None
        for i in range(count):
            if pos >= len(buf):
                return False  # the chunk ended between two arguments
            if buf[pos : pos + 1] != b"$":
                raise ValueError("unexpected RESP from client")
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return False
            size = int(buf[pos + 1 : line_end])
            start = line_end + 2
            if len(buf) < start + size + 2:
                return False
            if i == 0:
                name = buf[start : start + size].decode("ascii", "replace").upper()
            pos = start + size + 2
        self.record(name or "?")
        self.buf = buf[pos:]
        return True


class WireProxy:
    """`with WireProxy(port) as proxy:` then connect to proxy.port; read
    proxy.commands (a Counter by command name) or proxy.total."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.commands: Counter[str] = Counter()
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, password: str | None = None, db: int = 0) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def _record(self, name: str) -> None:
        with self._lock:
            self.commands[name] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.commands.values())

    def billed(
        self,
        unbilled: frozenset[str] = frozenset(
            {"AUTH", "INFO", "PING", "QUIT", "COMMAND"}
        ),
    ) -> int:
        with self._lock:
            return sum(n for c, n in self.commands.items() if c not in unbilled)

    def reset(self) -> None:
        with self._lock:
            self.commands.clear()

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.commands)

    def start(self) -> WireProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> WireProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            self._sockets += [client, upstream]
            counter = _RespCounter(self._record)
            threading.Thread(
                target=self._pump, args=(client, upstream, counter), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, None), daemon=True
            ).start()

    @staticmethod
    def _pump(
        src: socket.socket, dst: socket.socket, counter: _RespCounter | None
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counter is not None:
                    counter.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
