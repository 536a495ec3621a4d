"""A Redis proxy for failure tests: it forwards commands one at a time and can
answer them itself with Upstash's quota error, add latency, or drop connections.

Each connection is served by one thread that reads a command from the client,
then either forwards it and relays exactly one reply, or writes the error
reply itself — so replies can never overtake each other. Listens on 127.0.0.1
only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from typing import Any

QUOTA_ERROR = (
    b"-ERR max requests limit exceeded. Limit: 500000, Usage: 500000. "
    b"See https://upstash.com/docs/redis/troubleshooting/max_requests_limit\r\n"
)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def command(self) -> tuple[str, bytes]:
        """One client command: (name, raw bytes)."""
        first = self.line()
        if first[:1] != b"*":
            parts = first.split()
            return (parts[0].decode().upper() if parts else "?"), first
        raw = [first]
        name = "?"
        for i in range(int(first[1:-2])):
            header = self.line()
            size = int(header[1:-2])
            body = self.exactly(size + 2)
            raw += [header, body]
            if i == 0:
                name = body[:-2].decode("ascii", "replace").upper()
        return name, b"".join(raw)

    def reply(self) -> bytes:
        """One server reply (RESP2, and the RESP3 types, for safety)."""
        head = self.line()
        kind = head[:1]
        if kind in b"$=!":
            size = int(head[1:-2])
            return head if size < 0 else head + self.exactly(size + 2)
        if kind in b"*~>%|":
            count = int(head[1:-2])
            if count < 0:
                return head
            items = count * 2 if kind in b"%|" else count
            out = head + b"".join(self.reply() for _ in range(items))
            return out + self.reply() if kind == b"|" else out
        return head  # + - : _ # , (


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.quota_after: int | None = None  # forward this many, then refuse all
        self.latency_s = 0.0
        self.forwarded: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    # --- controls ---------------------------------------------------------
    def exhaust(self) -> None:
        with self._lock:
            self.quota_after = sum(self.forwarded.values())

    def restore(self) -> None:
        with self._lock:
            self.quota_after = None

    def reset_counts(self) -> None:
        with self._lock:
            self.forwarded.clear()
            self.refused.clear()

    def drop_connections(self) -> None:
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._stop_listening()

    def _stop_listening(self) -> None:
        """Refuse new connections (the listening socket closed) and cut the
        open ones."""
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections()

    # --- serving ----------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _refuse(self, name: str) -> bool:
        with self._lock:
            # AUTH is answered by the provider before the quota applies.
            if self.quota_after is None or name == "AUTH":
                refuse = False
            else:
                refuse = sum(self.forwarded.values()) >= self.quota_after
            (self.refused if refuse else self.forwarded)[name] += 1
            return refuse

    def _connection(self) -> Any:
        """Per-connection state a subclass's `_forward` keeps (None here)."""
        return None

    def _forward(
        self,
        conn: Any,
        name: str,
        raw: bytes,
        upstream: socket.socket,
        from_server: _Reader,
        client: socket.socket,
    ) -> None:
        """One command to Redis and its reply back: the hook for subclasses
        that hold or change replies."""
        upstream.sendall(raw)
        client.sendall(from_server.reply())

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            from_client, from_server = _Reader(client), _Reader(upstream)
            conn = self._connection()
            while True:
                name, raw = from_client.command()
                if self.latency_s:
                    time.sleep(self.latency_s)
                if self._refuse(name):
                    client.sendall(QUOTA_ERROR)
                    continue
                self._forward(conn, name, raw, upstream, from_server, client)
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
