"""Safe concurrent image fetching, in the standard library only.

The web is hostile: servers lie about content types, trickle bytes forever,
send 50 MB "thumbnails", bounce between redirects, or point at addresses inside
our own network (SSRF). `Fetcher.fetch_many` downloads many URLs at once and
returns, for each, either the complete body or a refusal with a stable reason
slug that reports count by. It never raises for a bad URL and never hangs: a
watchdog closes any connection that outlives its image's deadline.

The network checks (URL form, public addresses, pinned connections, the
watchdog, magic bytes) live in `netsafe`; this module schedules and reads.

What it does not do is decide whether the bytes are a good image: that is the
ingest pipeline's job (decode under a pixel limit, normalise, dedup). We only
refuse early what is certainly not an image (HTML, text, SVG, unknown magic).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from dragonclf import config
from dragonclf.errors import Refused
from dragonclf.netsafe import (
    FetchRefused,
    PinnedHTTPConnection,
    PinnedHTTPSConnection,
    Watchdog,
    is_public_address,
    normalise_url,
    refuse_head,
    resolve,
)

USER_AGENT = "dragonclf/0.1 (+image classifier builder)"
_TEXTUAL_TYPES = ("text/", "html", "xml", "json", "javascript", "svg")  # content types that are never photos

# Reason slugs a fetch can end with (the ingest pipeline adds its own).
REASONS = (
    "bad-url", "bad-scheme", "dns-failed", "dns-timeout", "private-address",
    "connect-failed", "connection-reset", "timeout", "deadline", "cancelled",
    "too-many-redirects", "redirect-loop", "insecure-redirect", "too-many-bytes", "not-an-image", "svg",
    "empty", "truncated", "protocol-error", "tls-error",
)  # plus "http-<status>" for any non-2xx final status


@dataclass(frozen=True)
class FetchConfig:
    workers: int = 32  # connections in flight in all
    per_host: int = 8  # connections in flight to one host (be polite)
    connect_timeout: float = 5.0  # seconds to open a TCP (and TLS) connection
    read_timeout: float = 10.0  # seconds without a single byte before giving up
    deadline: float = 30.0  # seconds for the whole image, redirects and retries included
    max_bytes: int = 20 * 1024 * 1024  # body cap, enforced while streaming
    max_redirects: int = 5  # hops followed before "too-many-redirects"
    retries: int = 2  # extra attempts after a transient failure (reset, 5xx, 429)
    backoff: float = 0.1  # first retry waits this long, then doubles (urllib3-style); Retry-After wins
    allow_private: bool | None = None  # None: read config.allow_private_urls()


@dataclass
class FetchResult:
    url: str  # as requested (normalised)
    ok: bool = False
    data: bytes = b""
    final_url: str = ""  # after redirects
    content_type: str = ""
    status: int | None = None
    reason: str | None = None  # slug when not ok
    detail: str = ""  # a human sentence when not ok
    attempts: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------- fetching


class Fetcher:
    """Fetch many URLs at once; use as a context manager or call close()."""

    def __init__(self, cfg: FetchConfig = FetchConfig(), cancel: threading.Event | None = None,
                 tls: ssl.SSLContext | None = None):
        self.cfg = cfg
        self.cancel = cancel or threading.Event()
        self.allow_private = config.allow_private_urls() if cfg.allow_private is None else cfg.allow_private
        self._pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="dragonclf-fetch")
        # getaddrinfo cannot be interrupted, so it runs here and we stop waiting at the deadline.
        self._resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dragonclf-dns")
        # Answers are kept for this fetcher's life: search results repeat hosts, and we always
        # connect to the answer we checked, so reusing it opens no rebinding hole.
        self._dns: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        self._watchdog = Watchdog(self.cancel)
        self._tls = tls or ssl.create_default_context()  # certificates and host names always checked
        self._token = 0
        self._token_lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._resolver.shutdown(wait=False, cancel_futures=True)
        self._watchdog.close()

    # -- public

    def submit(self, url: str) -> Future:
        """Start fetching one URL; the future's result is a FetchResult (never an exception)."""
        return self._pool.submit(self.fetch, url)

    def fetch_many(self, urls: Iterable[str]) -> Iterator[FetchResult]:
        """Yield a FetchResult per distinct URL, in completion order, at most `workers` in flight."""
        pending: set[Future] = set()
        seen: set[str] = set()
        for url in urls:
            try:
                key = normalise_url(url)
            except Refused:
                key = url  # fetch() will report why
            if key in seen:
                continue  # the same URL twice is fetched once
            seen.add(key)
            if self.cancel.is_set():
                break
            pending.add(self.submit(url))
            if len(pending) >= self.cfg.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)

    def fetch(self, url: str) -> FetchResult:
        """Fetch one URL to completion or refusal, within the deadline. Never raises."""
        start = time.monotonic()
        result = FetchResult(url=url)
        try:
            result.url = normalise_url(url)
            self._fetch_with_retries(result, start + self.cfg.deadline)
            result.ok = True
        except FetchRefused as r:
            result.reason, result.detail, result.data = r.reason, r.detail, b""
        result.seconds = time.monotonic() - start
        return result

    # -- internals

    def _fetch_with_retries(self, result: FetchResult, deadline: float) -> None:
        attempt = 0
        while True:
            attempt += 1
            result.attempts = attempt
            try:
                self._follow_redirects(result, deadline)
                return
            except FetchRefused as r:
                if self.cancel.is_set():
                    raise FetchRefused("cancelled", "stopped before this image finished") from None
                if not r.transient or attempt > self.cfg.retries:
                    raise
                wait_s = r.retry_after if r.retry_after is not None else self.cfg.backoff * 2 ** (attempt - 1)
                if time.monotonic() + wait_s >= deadline:
                    raise  # no time left for another try: report what happened
                if self.cancel.wait(wait_s):
                    raise FetchRefused("cancelled", "stopped before this image finished") from None

    def _follow_redirects(self, result: FetchResult, deadline: float) -> None:
        url, visited = result.url, set()
        for _hop in range(self.cfg.max_redirects + 1):
            visited.add(url)
            location = self._request(url, result, deadline)
            if location is None:
                result.final_url = url
                return
            nxt = normalise_url(urljoin(url, location))  # each hop is checked afresh
            if url.startswith("https:") and nxt.startswith("http:"):
                raise FetchRefused("insecure-redirect", f"an https address redirected to plain http ({nxt})")
            url = nxt
            if url in visited:
                raise FetchRefused("redirect-loop", f"redirect back to {url}")
        raise FetchRefused("too-many-redirects", f"more than {self.cfg.max_redirects} redirects")

    def _host_slot(self, host: str) -> threading.BoundedSemaphore:
        with self._hosts_lock:
            if host not in self._hosts:
                self._hosts[host] = threading.BoundedSemaphore(self.cfg.per_host)
            return self._hosts[host]

    def _addresses(self, host: str, port: int, deadline: float) -> list[tuple[int, str]]:
        addrs = self._dns.get((host, port))
        if addrs is None:
            future = self._resolver.submit(resolve, host, port)
            try:
                addrs = future.result(timeout=max(0.01, min(self.cfg.connect_timeout, deadline - time.monotonic())))
            except TimeoutError:
                raise FetchRefused("dns-timeout", f"no DNS answer for {host}") from None
            except (socket.gaierror, UnicodeError, OSError) as e:
                raise FetchRefused("dns-failed", f"cannot resolve {host}: {e}") from None
            if not addrs:
                raise FetchRefused("dns-failed", f"no address for {host}")
            self._dns[(host, port)] = addrs
        if not self.allow_private:
            bad = [ip for _f, ip in addrs if not is_public_address(ip)]
            if bad:  # any bad answer is refused: mixing good and bad answers is a rebinding trick
                raise FetchRefused("private-address", f"{host} resolves to non-public address {bad[0]}")
        return addrs

    def _request(self, url: str, result: FetchResult, deadline: float) -> str | None:
        """One HTTP exchange. Returns a redirect target, or None with result.data filled."""
        parts = urlsplit(url)
        host, https = parts.hostname, parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        addrs = self._addresses(host, port, deadline)
        slot = self._host_slot(host)
        if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise FetchRefused("deadline", f"waited too long for a free connection to {host}")
        with self._token_lock:
            self._token += 1
            token = self._token
        conn = None
        try:
            errors = []
            for family, ip in addrs:  # try each checked address in turn
                timeout = self._timeout(self.cfg.connect_timeout, deadline)

                def on_socket(s, _tok=token):
                    self._watchdog.watch(_tok, deadline, s)

                if https:
                    conn = PinnedHTTPSConnection(host, port, ip, family, timeout, on_socket, self._tls)
                else:
                    conn = PinnedHTTPConnection(host, port, ip, family, timeout, on_socket)
                try:
                    conn.connect()
                    break
                except ssl.SSLError as e:
                    raise FetchRefused("tls-error", f"TLS failed with {host}: {e}") from None
                except OSError as e:
                    conn.close()
                    errors.append(e)
                    conn = None
            if conn is None:
                raise self._os_refusal(errors[-1], deadline, "connect")
            return self._exchange(conn, host, path, url, result, deadline)
        finally:
            if conn is not None:
                conn.close()
            self._watchdog.forget(token)
            slot.release()

    def _exchange(self, conn, host, path, url, result, deadline) -> str | None:
        try:
            sock = conn.sock  # getresponse() hands it to the response when the server will close
            sock.settimeout(self._timeout(self.cfg.read_timeout, deadline))
            conn.putrequest("GET", path, skip_accept_encoding=True)
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Accept", "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8")
            conn.putheader("Accept-Encoding", "identity")  # compressed bodies would dodge the byte cap
            conn.endheaders()
            resp = conn.getresponse()
            result.status = resp.status
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchRefused(f"http-{resp.status}", "redirect without a Location")
                return location
            if resp.status == 429 or 500 <= resp.status < 600:
                raise FetchRefused(f"http-{resp.status}", f"server answered {resp.status} {resp.reason}",
                               transient=True, retry_after=self._retry_after(resp, deadline))
            if not 200 <= resp.status < 300:
                raise FetchRefused(f"http-{resp.status}", f"server answered {resp.status} {resp.reason}")
            ctype = (resp.getheader("Content-Type") or "").lower()
            result.content_type = ctype
            if any(t in ctype for t in _TEXTUAL_TYPES):
                raise FetchRefused("svg" if "svg" in ctype else "not-an-image", f"content type is {ctype}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > self.cfg.max_bytes:
                raise FetchRefused("too-many-bytes", f"server announces {int(length)} bytes (cap {self.cfg.max_bytes})")
            result.data = self._read_body(sock, resp, ctype, deadline)
            return None
        except FetchRefused:
            raise
        except (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionResetError,
                BrokenPipeError) as e:
            if time.monotonic() >= deadline or self.cancel.is_set():
                raise self._late(deadline) from None
            raise FetchRefused("connection-reset", f"connection dropped: {e!r}", transient=True) from None
        except http.client.HTTPException as e:
            if time.monotonic() >= deadline or self.cancel.is_set():
                raise self._late(deadline) from None
            raise FetchRefused("protocol-error", f"bad HTTP from server: {e!r}") from None
        except OSError as e:
            raise self._os_refusal(e, deadline, "read") from None

    def _read_body(self, sock, resp, ctype: str, deadline: float) -> bytes:
        chunks, total, head_checked = [], 0, False
        while True:
            sock.settimeout(self._timeout(self.cfg.read_timeout, deadline))
            chunk = resp.read1(65536)  # returns as soon as any bytes arrive
            if time.monotonic() >= deadline or self.cancel.is_set():
                raise self._late(deadline)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > self.cfg.max_bytes:
                raise FetchRefused("too-many-bytes", f"more than {self.cfg.max_bytes} bytes")
            if not head_checked and total >= 16:
                refuse_head(b"".join(chunks)[:512], ctype)  # refuse HTML early, not after 20 MB
                head_checked = True
        if resp.length:  # Content-Length promised more than arrived before the close
            raise FetchRefused("truncated", f"connection closed {resp.length} bytes early", transient=True)
        data = b"".join(chunks)
        if not data:
            raise FetchRefused("empty", "server sent zero bytes")
        if not head_checked:
            refuse_head(data, ctype)
        return data

    def _late(self, deadline: float) -> FetchRefused:
        if self.cancel.is_set():
            return FetchRefused("cancelled", "stopped before this image finished")
        return FetchRefused("deadline", f"image took longer than {self.cfg.deadline:g} s")

    def _os_refusal(self, e: OSError, deadline: float, phase: str) -> FetchRefused:
        if time.monotonic() >= deadline - 0.01 or self.cancel.is_set():
            return self._late(deadline)
        if isinstance(e, (TimeoutError, socket.timeout)):
            return FetchRefused("timeout", f"no answer within the {phase} timeout")
        if isinstance(e, ssl.SSLError):
            return FetchRefused("tls-error", str(e))
        if isinstance(e, ConnectionResetError):
            return FetchRefused("connection-reset", f"connection reset during {phase}", transient=True)
        return FetchRefused("connect-failed" if phase == "connect" else "connection-reset",
                        f"{phase} failed: {e}", transient=phase != "connect")

    def _timeout(self, limit: float, deadline: float) -> float:
        return max(0.01, min(limit, deadline - time.monotonic()))

    def _retry_after(self, resp, deadline: float) -> float | None:
        value = resp.getheader("Retry-After")
        if value and value.strip().isdigit():
            return min(float(value), max(0.0, deadline - time.monotonic()))
        return None
