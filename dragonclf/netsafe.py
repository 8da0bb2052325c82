"""What may be fetched, and how we connect: the network side of safe downloading.

URLs are normalised (one form per image) and refused when they cannot be
fetched; host addresses are checked before connecting (no private, loopback or
reserved targets unless allowed: SSRF); connections go to the very address that
was checked (no DNS rebinding); a watchdog bounds each image's total time; the
first bytes must announce an image format. `download.Fetcher` puts these together.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import threading
import time
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from dragonclf.errors import Refused


class FetchRefused(Refused):
    """A refusal that may be worth retrying (transient) after `retry_after` seconds."""

    def __init__(self, reason: str, detail: str = "", transient: bool = False, retry_after: float | None = None):
        super().__init__(reason, detail)
        self.transient, self.retry_after = transient, retry_after


# --------------------------------------------------------------------------- URLs

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def normalise_url(url: str) -> str:
    """A canonical form, so the same image asked for twice is fetched once.

    Drops the fragment (never sent to servers), lower-cases scheme and host,
    IDNA-encodes international host names, percent-encodes spaces and non-ASCII
    without double-encoding existing escapes, and drops default ports.
    Raises Refused (reason "bad-url" or "bad-scheme") for what cannot be fetched.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise FetchRefused("bad-url", f"unparsable URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused("bad-scheme", f"only http and https can be fetched, not {scheme or 'a relative URL'!r}")
    if parts.username is not None or parts.password is not None:
        # "http://good.com@evil.com/" tricks people reading logs; no image needs it.
        raise FetchRefused("bad-url", "URLs with a user name or password are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchRefused("bad-url", "URL has no host")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise FetchRefused("bad-url", f"bad host name: {e}") from None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    path = quote(_BAD_PERCENT.sub("%25", parts.path or "/"), safe=_PATH_SAFE)
    query = quote(_BAD_PERCENT.sub("%25", parts.query), safe=_QUERY_SAFE)
    return urlunsplit(SplitResult(scheme, host, path, query, ""))


# --------------------------------------------------------------------------- addresses


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def is_public_address(ip: str) -> bool:
    """False for loopback, private, link-local, site-local, reserved, multicast, unspecified, CGNAT...

    IPv6 forms that carry an IPv4 address inside (IPv4-mapped, 6to4, NAT64) are
    judged by the IPv4 address they reach: `2002:7f00:1::1` is 127.0.0.1 through a
    6to4 relay. Teredo tunnels (2001::/32) are never fetched from.
    """
    addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        elif addr.sixtofour is not None:
            return is_public_address(str(addr.sixtofour))
        elif addr.teredo is not None:
            return False
        elif any(addr in net for net in _NAT64):
            return is_public_address(str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)))
        elif addr.is_site_local:  # fec0::/10: deprecated, still routed inside some networks
            return False
    bad = (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
           or addr.is_multicast or addr.is_unspecified)
    return addr.is_global and not bad


def resolve(host: str, port: int) -> list[tuple[int, str]]:
    # socket.getaddrinfo looked up at call time, so tests can patch the resolver.
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen, out = set(), []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
            seen.add(sockaddr[0])
            out.append((family, sockaddr[0]))
    return out


# --------------------------------------------------------------------------- connections


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address we already checked, never to a fresh DNS answer.

    Resolving again at connect time would let a hostile DNS server answer a
    public address to our check and 127.0.0.1 to the connection (rebinding).
    """

    def __init__(self, host, port, ip, family, timeout, on_socket):
        super().__init__(host, port, timeout=timeout)
        self._ip, self._family, self._on_socket = ip, family, on_socket

    def connect(self):
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        self._on_socket(sock)  # the watchdog may close it from now on
        sock.settimeout(self.timeout)
        try:
            sock.connect((self._ip, self.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class PinnedHTTPSConnection(PinnedHTTPConnection):
    default_port = 443

    def __init__(self, host, port, ip, family, timeout, on_socket, context):
        super().__init__(host, port, ip, family, timeout, on_socket)
        self._context = context

    def connect(self):
        super().connect()
        # SNI and certificate checks use the host name, not the pinned IP.
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)
        self._on_socket(self.sock)


class Watchdog:
    """Closes sockets whose image ran past its deadline, or all on cancel.

    A socket timeout only bounds the wait for the *next* byte; a server that
    sends one byte a second would hold a reader forever without this.
    """

    def __init__(self, cancel: threading.Event | None):
        self._cancel = cancel
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dragonclf-watchdog", daemon=True)
        self._thread.start()

    def watch(self, token: int, deadline: float, sock: socket.socket) -> None:
        with self._lock:
            self._watched[token] = (deadline, sock)

    def forget(self, token: int) -> None:
        with self._lock:
            self._watched.pop(token, None)

    def _run(self):
        while not self._stop.wait(0.05):
            now = time.monotonic()
            cancelled = self._cancel is not None and self._cancel.is_set()
            with self._lock:
                late = [tok for tok, (dl, _s) in self._watched.items() if cancelled or now >= dl]
                socks = [self._watched.pop(tok)[1] for tok in late]
            for s in socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the blocked reader at once
                except OSError:
                    pass  # already closed by its owner: nothing left to stop

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1)


# --------------------------------------------------------------------------- sniffing

def sniff_image(head: bytes) -> str | None:
    """The image format the first bytes announce, or None when they are no image we know."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "avif"
    return None


def refuse_head(head: bytes, content_type: str) -> None:
    if sniff_image(head):
        return
    text = head.lstrip()[:256].lower()
    if b"<svg" in text or "svg" in content_type:
        raise FetchRefused("svg", "SVG is a vector drawing, not a photo")
    what = "HTML" if (b"<html" in text or b"<!doctype" in text) else "not a known image format"
    raise FetchRefused("not-an-image", f"body is {what} (content type {content_type or 'missing'})")
