"""A real HTTP/1.1 server on a free loopback port that fails on request, for the ML client tests.

``FaultServer`` answers the ML service's four endpoints like the reference service would (the
original's JSON field names), keeps connections alive, and counts what the client does:
accepted connections, the most connections open at once, the most connections busy with a
request at once, and every request (method, path,
JSON body, connection number). Tell it how to answer the next requests with :meth:`push`:

* ``Fault.status(503)``, ``Fault.status(500)``, ``Fault.status(404)``,
  ``Fault.status(429, retry_after="1")``: that status with a short JSON body;
* ``Fault.reset()``: read the request, then reset the connection (RST);
* ``Fault.close()``: read the request, then close the connection without answering;
* ``Fault.slow(seconds)``: read the request, wait, then answer normally;
* ``Fault.trickle(seconds)``: the normal answer, its head at once and its body one byte every
  ``seconds`` (``head=True``: the head too), which no per-read timeout ever catches;
* ``Fault.invalid_json()``: 200 with a body that is not JSON;
* ``Fault.json(payload, status=200)``: that JSON instead of the normal answer;
* ``Fault.truncated()``: 200 whose body ends before its Content-Length.

Faults are used in order, one per request; when none is left, requests get the normal answer
(after ``answer_delay`` seconds, 0 by default). ``stop_listening()`` / ``start_listening()``
close and reopen the listening socket on the same port (connections are then refused).

It deliberately implements only what the client sends: requests with a Content-Length body
(no chunked uploads), no TLS, no pipelining.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

FaultKind = Literal[
    "status", "json", "reset", "close", "slow", "trickle", "invalid_json", "truncated"
]


@dataclass(frozen=True)
class Fault:
    """How to answer one request instead of the normal answer."""

    kind: FaultKind
    status_code: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    payload: Any = None
    head: bool = False

    @classmethod
    def status(cls, code: int, *, retry_after: str | None = None) -> Fault:
        return cls("status", status_code=code, retry_after=retry_after)

    @classmethod
    def json(cls, payload: Any, *, status: int = 200) -> Fault:
        return cls("json", status_code=status, payload=payload)

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def close(cls) -> Fault:
        return cls("close")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls("slow", seconds=seconds)

    @classmethod
    def trickle(cls, seconds: float, *, head: bool = False) -> Fault:
        return cls("trickle", seconds=seconds, head=head)

    @classmethod
    def invalid_json(cls) -> Fault:
        return cls("invalid_json")

    @classmethod
    def truncated(cls) -> Fault:
        return cls("truncated")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    connection: int
    arrived: float = field(compare=False)


_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def normal_answer(path: str, body: Any) -> tuple[int, Any]:
    """What the service answers when no fault is queued (original field names)."""
    now = datetime.now(UTC).isoformat()
    if path == "/api/health":
        return 200, {"status": "healthy", "model_version": "fault-server"}
    if path == "/api/predict/query-execution":
        mean = float(body["features"]["mean_exec_time_ms"])
        return 200, {
            "query_hash": body["query_hash"],
            "scenario": body["scenario"],
            "model_id": body["model_id"],
            "predicted_execution_time_ms": mean,
            "confidence_score": 0.9,
            "confidence_interval": {"lower_bound_ms": mean / 2, "upper_bound_ms": mean * 2},
            "model_version": "fault-server",
            "prediction_timestamp": now,
        }
    if path == "/api/validate/prediction":
        predicted = body["predicted_execution_time_ms"]
        actual = body["actual_execution_time_ms"]
        return 200, {
            "query_hash": body["query_hash"],
            "predicted_execution_time_ms": predicted,
            "actual_execution_time_ms": actual,
            "error_ms": predicted - actual,
            "error_percent": abs(predicted - actual) / actual * 100 if actual else 0.0,
            "within_interval": None,
            "validated_at": now,
        }
    if path == "/api/train/performance-model":
        return 202, {
            "job_id": "job-1",
            "status": "accepted",
            "model_type": body["model_type"],
            "samples": len(body["features"]),
            "submitted_at": now,
        }
    return 404, {"detail": f"no route {path}"}


class FaultServer:
    """See the module docstring. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.answer_delay = 0.0
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._accepted = 0
        self._open = 0
        self._max_open = 0
        self._busy = 0
        self._max_busy = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind((host, 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.start_listening()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- what the tests read -----------------------------------------------------------------

    @property
    def accepted_connections(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def max_concurrent_connections(self) -> int:
        with self._lock:
            return self._max_open

    @property
    def max_busy_connections(self) -> int:
        """The most connections that had a request in progress at the same time."""
        with self._lock:
            return self._max_busy

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def request_count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._requests if path is None or r.path == path)

    # --- what the tests tell it --------------------------------------------------------------

    def push(self, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` requests (after those already queued) with ``fault``."""
        with self._lock:
            self._faults.extend([fault] * times)

    def start_listening(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name="fault-server-accept", daemon=True
        )
        self._accept_thread.start()

    def stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)

    def stop(self) -> None:
        self._stopping.set()
        self.stop_listening()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # shutdown, not close: it wakes the thread blocked reading from the connection.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- serving -----------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._accepted += 1
                number = self._accepted
                self._open += 1
                self._max_open = max(self._max_open, self._open)
                self._connections.add(conn)
            threading.Thread(
                target=self._serve_connection, args=(conn, number), daemon=True
            ).start()

    def _serve_connection(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, path, headers, raw = request
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                with self._lock:
                    self._requests.append(
                        RecordedRequest(method, path, body, number, time.monotonic())
                    )
                    fault = self._faults.popleft() if self._faults else None
                    self._busy += 1
                    self._max_busy = max(self._max_busy, self._busy)
                try:
                    keep_open = self._answer(conn, fault, path, body)
                finally:
                    with self._lock:
                        self._busy -= 1
                if not keep_open:
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return
        finally:
            reader.close()
            _close_quietly(conn)
            with self._lock:
                self._open -= 1
                self._connections.discard(conn)

    def _answer(self, conn: socket.socket, fault: Fault | None, path: str, body: Any) -> bool:
        """Write the answer; False when the connection must end."""
        if fault is None or fault.kind == "slow":
            delay = fault.seconds if fault is not None else self.answer_delay
            if delay and self._stopping.wait(delay):
                return False
            status, payload = normal_answer(path, body)
            conn.sendall(_response(status, json.dumps(payload).encode()))
            return True
        if fault.kind == "trickle":
            status, payload = normal_answer(path, body)
            answer = _response(status, json.dumps(payload).encode())
            body_start = answer.index(b"\r\n\r\n") + 4
            sent = 0 if fault.head else body_start
            conn.sendall(answer[:sent])
            while sent < len(answer):
                if self._stopping.wait(fault.seconds):
                    return False
                conn.sendall(answer[sent : sent + 1])
                sent += 1
            return True
        if fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            payload = json.dumps({"detail": f"injected {fault.status_code}"}).encode()
            conn.sendall(_response(fault.status_code, payload, extra))
            return True
        if fault.kind == "json":
            conn.sendall(_response(fault.status_code, json.dumps(fault.payload).encode()))
            return True
        if fault.kind == "invalid_json":
            conn.sendall(_response(200, b"<html>this is not JSON</html>"))
            return True
        if fault.kind == "truncated":
            head = _response(200, b"")[: -len(b"Content-Length: 0\r\n\r\n")]
            conn.sendall(head + b'Content-Length: 100\r\n\r\n{"predicted_exec')
            return False
        if fault.kind == "reset":
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return False  # "close": end the connection without a word


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _read_request(reader: Any) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request from the connection, or None at EOF."""
    request_line = reader.readline(65537)
    if not request_line:
        return None
    method, path, _ = request_line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = reader.read(length) if length else b""
    return method, path, headers, body


def _close_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()
