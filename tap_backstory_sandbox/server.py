"""HTTP layer and the ``Sandbox`` object: one ThreadingHTTPServer serving both APIs and the admin endpoints.

Paths::

    /backstory/...      Backstory bulk APIs (see backstory.py)
    /contactbased/...   ContactBased Data APIs (see contactbased.py)
    GET  /_sandbox/stats         counters (see Stats.as_dict) plus the current settings
    GET  /_sandbox/events        the event log: [{"t", "kind", ...}]
    POST /_sandbox/configure     JSON body of settings overrides (incl. "today": "YYYY-MM-DD")
    POST /_sandbox/reset-stats   clear counters and events
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import faults
from .backstory import Backstory
from .backstory import error as backstory_error
from .contactbased import ContactBased
from .settings import DEMO_CREDENTIALS, SandboxSettings
from .state import Request, Response, SandboxState


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away (a tap killed on purpose, an idle keep-alive closed) is normal traffic,
        # not a sandbox fault worth a traceback; anything else is still printed.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _dispatch(self) -> None:
        sb = self.server.sandbox
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            resp = sb._handle(self.command, split.path, query, self.headers, body)
        except Exception as exc:  # a bug in the sandbox itself: still answer, and make it visible
            sb.state.event("sandbox_bug", error=repr(exc), path=split.path)
            resp = Response.json(500, {"error": "InternalServerError", "message": f"sandbox bug: {exc!r}",
                                       "detail": f"sandbox bug: {exc!r}"})
        if not split.path.startswith("/_sandbox/"):  # admin calls are not API traffic
            with sb.state.lock:
                sb.state.stats.requests_by_status[str(resp.status)] += 1
                sb.state.stats.requests_total += 1
                sb.state.stats.requests_by_api[split.path.split("/")[1]] += 1
        try:
            self._write(resp)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _write(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if resp.stream is None:
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
            return
        chunked = resp.content_length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(resp.content_length))
        if resp.drop_after is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        sb = self.server.sandbox
        throttle = faults.Throttle(sb.state.settings.bandwidth_bytes_per_sec if resp.throttle else 0)
        with sb.state.lock:
            stats = sb.state.stats
            stats.data_streams += 1
            stats.max_data_streams = max(stats.max_data_streams, stats.data_streams)
        try:
            sent = self._stream_body(resp, chunked, throttle)
        finally:
            with sb.state.lock:
                sb.state.stats.data_streams -= 1
        with sb.state.lock:
            sb.state.stats.data_bytes_sent += sent

    def _stream_body(self, resp: Response, chunked: bool, throttle: faults.Throttle) -> int:
        """Sends a streamed body (cut off where `drop_after` says); the bytes sent."""
        sent = 0
        for chunk in resp.stream:
            if resp.drop_after is not None and sent + len(chunk) >= resp.drop_after:
                chunk = chunk[: max(0, resp.drop_after - sent)]
                self._send(chunk, chunked, throttle)
                sent += len(chunk)
                self.wfile.flush()
                self._hard_close()
                break
            self._send(chunk, chunked, throttle)
            sent += len(chunk)
        else:
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            if resp.drop_after is not None:  # body shorter than expected: still cut the connection
                self._hard_close()
        return sent

    def _send(self, chunk: bytes, chunked: bool, throttle: faults.Throttle) -> None:
        step = throttle.chunk_size()
        for i in range(0, len(chunk), step):
            piece = chunk[i:i + step]
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            throttle.account(len(piece))

    def _hard_close(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Sandbox:
    """In-process sandbox. ``with Sandbox(settings) as sb:`` starts it on 127.0.0.1 (port 0 = a free port)."""

    def __init__(self, settings: SandboxSettings | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings or SandboxSettings()
        self.state = SandboxState(self.settings)
        self.backstory = Backstory(self.state)
        self.contactbased = ContactBased(self.state)
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sandbox = self
        self.port = self._server.server_address[1]
        self._stop.clear()
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="sandbox-http", daemon=True),
                         threading.Thread(target=self._scheduler, name="sandbox-jobs", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._server = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _scheduler(self) -> None:
        while not self._stop.wait(0.02):
            self.backstory.tick()

    # --- URLs and config -----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backstory_url(self) -> str:
        return self.base_url + "/backstory"

    @property
    def contactbased_url(self) -> str:
        return self.base_url + "/contactbased"

    def tap_config(self) -> dict[str, Any]:
        """Settings for the tap: both base URLs and the five demo credentials."""
        return {"api_url": self.backstory_url, "contactbased_api_url": self.contactbased_url, **DEMO_CREDENTIALS}

    # --- runtime control -----------------------------------------------------------------------------------
    def set_today(self, today: date | str) -> None:
        self.configure(today=today)

    def configure(self, **overrides: Any) -> None:
        """Change settings or faults at run time; unknown names raise ValueError."""
        with self.state.lock:
            self.settings.apply(overrides)
            if "seed" in overrides or "error_rate" in overrides:
                self.state.rng.seed(self.settings.seed)
            for name in faults.POSITION_FAULTS:
                if name in overrides:  # counted from now
                    self.state.fault_seen[name] = 0
        self.state.event("configured", **{k: str(v) for k, v in overrides.items()})

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            out = self.state.stats.as_dict()
            out["jobs_alive"] = sum(1 for j in self.backstory.jobs.values() if j.state in ("Queued", "Running"))
            out["settings"] = self.settings.to_dict()
            out["issued_tokens"] = list(self.backstory.tokens)  # not secrets here: lets tests grep logs for them
            return out

    def events(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.events)

    def reset_stats(self) -> None:
        with self.state.lock:
            self.state.stats.reset()
            self.state.events.clear()

    # --- request entry point -------------------------------------------------------------------------------
    def _handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> Response:
        if path.startswith("/_sandbox/"):
            return self._admin(method, path, body)
        for prefix, api in (("/backstory", self.backstory), ("/contactbased", self.contactbased)):
            if path == prefix or path.startswith(prefix + "/"):
                sub = path[len(prefix):] or "/"
                faults.slow_down(self.state)
                if sub.rstrip("/") != "/auth/v1/tokens":
                    injected = faults.maybe_inject_error(self.state, prefix[1:], sub)
                    if injected is not None:
                        return faults.maybe_hostile(self.state, headers, body, injected)
                resp = api.handle(Request(method, sub, query, headers, body))
                resp = faults.maybe_hostile(self.state, headers, body, resp)
                return faults.maybe_corrupt(self.state, prefix[1:], method, sub, resp)
        return backstory_error(404, "HTTP 404 Not Found")

    def _admin(self, method: str, path: str, body: bytes) -> Response:
        if method == "GET" and path == "/_sandbox/stats":
            return Response.json(200, self.stats())
        if method == "GET" and path == "/_sandbox/events":
            return Response.json(200, {"events": self.events()})
        if method == "POST" and path == "/_sandbox/reset-stats":
            self.reset_stats()
            return Response.json(200, {"ok": True})
        if method == "POST" and path == "/_sandbox/configure":
            try:
                overrides = json.loads(body or b"{}")
                if not isinstance(overrides, dict):
                    raise ValueError("body must be a JSON object")
                self.configure(**overrides)
            except ValueError as exc:
                return Response.json(400, {"detail": str(exc)})
            return Response.json(200, {"ok": True, "settings": self.settings.to_dict()})
        return Response.json(404, {"detail": "Not Found"})
