"""A misbehaving HTTP server (and proxy) on 127.0.0.1 for the hostile-server tests.

`HostileServer(handler)` serves every request with `handler(request) -> bytes | Iterator[bytes]`:
the raw bytes of the answer (status line, headers, body), written as they come, so a handler can drip
an answer byte by byte, send a gzip bomb or echo the key. Nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CERT, KEY_FILE = FIXTURES / "selfsigned-cert.pem", FIXTURES / "selfsigned-key.pem"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request], "bytes | Iterator[bytes]"]


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, reason: str = "X") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_answer(status: int, text: str, headers: dict[str, str] | None = None) -> bytes:
    return answer(status, text.encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class HostileServer:
    handler: Handler
    tls: bool = False
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._context = None
        if self.tls:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(CERT, KEY_FILE)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            if self._context is not None:
                try:
                    conn = self._context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            request = _read_request(conn)
            if request is None:
                return
            self.requests.append(request)
            result = self.handler(request)
            for part in [result] if isinstance(result, bytes) else result:
                if self._stop.is_set():
                    return
                conn.sendall(part)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return Request(method, target, headers, body)


def drip(data: bytes, every: float) -> Iterator[bytes]:
    """The bytes one at a time, `every` seconds apart."""
    for i in range(len(data)):
        yield data[i : i + 1]
        time.sleep(every)
