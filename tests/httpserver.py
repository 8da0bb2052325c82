"""A real HTTP server on a loopback address that plays the hostile web.

Used by the collect tests and by bench/bench_collect.py. Routes map a request
path (raw, as sent on the wire) to a small handler function; helpers add the
usual suspects: good images, lies about content type, 404/500, trickles,
huge bodies, redirect loops. Every request is counted per path, and the
highest number of requests in flight at once is recorded, so tests can check
politeness (per-host limits) and that refused URLs were never fetched.
"""

from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = REPO.parent / "shared" / "datasets" / "photos"


def real_photos() -> list[Path]:
    """The 122 public-domain photos (webp), sorted; the bundled demo holds the same ones."""
    folder = SHARED_PHOTOS if SHARED_PHOTOS.is_dir() else REPO / "datasets" / "demo"
    return sorted(p for p in folder.glob("*/*") if p.suffix in (".webp", ".jpg"))


def gradio_images() -> list[Path]:
    """Real JPEG/PNG photos shipped in gradio's wheel (located without importing gradio)."""
    import sysconfig

    folder = Path(sysconfig.get_paths()["purelib"]) / "gradio" / "media_assets" / "images"
    return sorted(p for p in folder.glob("*") if p.suffix in (".jpg", ".jpeg", ".png"))


class LoopbackServer:
    def __init__(self, host: str = "127.0.0.1", latency: float = 0.0, tls: tuple[str, str] | None = None):
        self.latency = latency  # added before every response, like a far-away server
        self.routes: dict[str, callable] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection, body ends at close

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                with server._lock:
                    server.hits[self.path] += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                answering = False
                try:
                    if server.latency:
                        time.sleep(server.latency)
                    # "In flight" ends when the answer starts: a client can reuse its slot as soon as it has
                    # read the answer, which may be before this thread reaches `finally`; counting until
                    # then let a correct client appear to exceed its bound by one.
                    with server._lock:
                        server.in_flight -= 1
                    answering = True
                    route = server.routes.get(self.path)
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on purpose (a cap or a deadline): that is the point
                finally:
                    if not answering:
                        with server._lock:
                            server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 drops SYNs under 32 parallel connects: 1 s stalls

        self.httpd = Server((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls:  # (certfile, keyfile): serve HTTPS
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def close(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- route helpers: each returns the full URL

    def add(self, path: str, handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def add_bytes(self, path: str, data: bytes, ctype: str = "image/jpeg", status: int = 200,
                  length: int | None = None, headers: dict | None = None) -> str:
        def handler(h):
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data) if length is None else length))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)

        return self.add(path, handler)

    def add_file(self, path: str, file: Path, ctype: str | None = None) -> str:
        types = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
        return self.add_bytes(path, Path(file).read_bytes(), ctype or types.get(Path(file).suffix, "image/jpeg"))

    def add_status(self, path: str, status: int, headers: dict | None = None) -> str:
        return self.add_bytes(path, f"<html>{status}</html>".encode(), "text/html", status, headers=headers)

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        def handler(h):
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        return self.add(path, handler)

    def add_trickle(self, path: str, head: bytes = b"\xff\xd8\xff\xe0", every: float = 0.05) -> str:
        """A JPEG that never finishes: one byte per `every` seconds, forever."""
        def handler(h):
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", "1000000")
            h.end_headers()
            h.wfile.write(head)
            h.wfile.flush()
            while not self.stopping.is_set():
                h.wfile.write(b"\x00")
                h.wfile.flush()
                time.sleep(every)

        return self.add(path, handler)

    def add_big(self, path: str, nbytes: int, announce: bool) -> str:
        """A JPEG-looking body of `nbytes`; with or without an honest Content-Length."""
        def handler(h):
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            if announce:
                h.send_header("Content-Length", str(nbytes))
            h.end_headers()
            block = b"\xff\xd8\xff\xe0" + bytes(65532)
            sent = 0
            while sent < nbytes and not self.stopping.is_set():
                h.wfile.write(block)
                sent += len(block)

        return self.add(path, handler)

    def add_flaky(self, path: str, data: bytes, failures: int, ctype: str = "image/jpeg") -> str:
        """Drops the connection without an answer `failures` times, then serves `data`."""
        count = {"n": 0}

        def handler(h):
            count["n"] += 1
            if count["n"] <= failures:
                h.close_connection = True
                h.connection.shutdown(2)  # RemoteDisconnected on the client: a transient failure
                return
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        return self.add(path, handler)


def png_bomb(side: int = 12000) -> bytes:
    """A valid grayscale PNG of side x side black pixels: ~140 KB that decodes to side^2 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
