"""A real HTTP server on 127.0.0.1 for tests that read shards or corpora from URLs: it
serves folders under prefixes and can break transfers, answer 503 and go away on request."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        prefix, _, name = urlparse(self.path).path.strip("/").partition("/")
        folder = owner.folders.get(prefix)
        if folder is None or not (folder / name).is_file():
            self.send_error(404)
            return
        data = (folder / name).read_bytes()
        with owner.lock:
            owner.agents.add(self.headers.get("User-Agent", ""))
            owner.tar_requests += name.endswith(".tar")
            die = name.endswith(".tar") and owner.tar_requests == owner.die_on_tar
            cut = name in owner.cut_once
            owner.cut_once.discard(name)
            busy = owner.busy.get(name, 0) > 0
            if busy:
                owner.busy[name] -= 1
        if busy:  # what S3 says under load: try again, here at once
            self.send_response(503, "Slow Down")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if cut or die else data)
        if die:  # the server goes away for good, mid-transfer
            owner.stop()


class _Server(ThreadingHTTPServer):
    owner: ShardServer


class ShardServer:
    """A real HTTP server on 127.0.0.1 serving folders under prefixes (``/shards/...``);
    ``cut_once`` names get half their bytes once, ``busy[name]`` requests of a name are
    answered 503 first, and the ``die_on_tar``-th tar request gets half its bytes before
    the server shuts down and closes its socket."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders
        self.cut_once: set[str] = set()
        self.busy: dict[str, int] = {}
        self.die_on_tar: int | None = None
        self.tar_requests = 0
        self.agents: set[str] = set()  # User-Agent headers seen: who opened the URLs
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.httpd.shutdown()
            # stop listening even where forked DataLoader workers hold the socket too
            self.httpd.socket.shutdown(socket.SHUT_RDWR)
            self.httpd.server_close()
