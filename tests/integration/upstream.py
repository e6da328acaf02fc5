"""A small real HTTP upstream for the runtime's integration tests (stdlib only).

It answers health checks and ``/metrics`` like a service would, and echoes any other
request as JSON (replica name, method, path, headers), so tests can see which replica
Envoy chose and which headers crossed the gateway.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(port: int, name: str) -> None:
    lock = threading.Lock()
    served = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else keep-alive replies stall ~40 ms (delayed ACK)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            if self.path.startswith("/health/"):
                self._reply(200, b"ok", "text/plain")
                return
            if self.path == "/metrics":
                text = f'upstream_requests_total{{replica="{name}"}} {served["count"]}\n'
                self._reply(200, text.encode(), "text/plain; version=0.0.4")
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                served["count"] += 1
            echo = {
                "replica": name,
                "method": self.command,
                "path": self.path,
                "body_bytes": len(body),
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
            self._reply(200, json.dumps(echo).encode(), "application/json")

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    serve(args.port, args.name)
