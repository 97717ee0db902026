"""A fault-injecting HTTP proxy in front of an S3 API (the moto server): it forwards requests
as they are, or, when told, answers 503 SlowDown or drops the connection before forwarding (so
a request that fails never reached the store), and counts the PUTs the store received per key."""
from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


class FaultyProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str):
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.mode = "pass"           # pass | slowdown | drop
        self.until = 0.0             # a fault mode ends at this time (0: until changed)
        self.every = 0               # >0: also fault every Nth request while passing
        self.count = 0
        self.puts: dict[str, int] = {}
        self.faults = 0
        self.on_put = None           # called with the key after each PUT reached the store
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass    # a client that gave up on a connection (it retries): not the test's output

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fault(self, mode: str, seconds: float = 0.0) -> None:
        with self.lock:
            self.mode, self.until = mode, (time.time() + seconds if seconds else 0.0)

    def decide(self) -> str:
        with self.lock:
            self.count += 1
            if self.mode != "pass" and self.until and time.time() > self.until:
                self.mode = "pass"
            if self.mode != "pass":
                self.faults += 1
                return self.mode
            if self.every and self.count % self.every == 0:
                self.faults += 1
                return "slowdown" if (self.count // self.every) % 2 else "drop"
            return "pass"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        what = self.server.decide()
        if what == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if what == "slowdown":
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN)))
            self.end_headers()
            self.wfile.write(SLOWDOWN)
            return
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if self.command == "PUT" and r.status < 300:
            key = urlsplit(self.path).path.lstrip("/")
            with self.server.lock:
                self.server.puts[key] = self.server.puts.get(key, 0) + 1
            if self.server.on_put:
                self.server.on_put(key)
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        # a HEAD answer's length is the object's (there is no body to count)
        self.send_header("Content-Length", r.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any
