"""The fetcher against a real loopback server playing the hostile web.

Each bad input must end as a complete body or a refusal with a stable reason,
within its deadline, and refused private addresses must never be connected to.
"""

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the loopback server helper beside this file
from httpserver import LoopbackServer, gradio_images, real_photos  # noqa: E402

from dragonclf import download  # noqa: E402
from dragonclf.download import Fetcher, FetchConfig, normalise_url  # noqa: E402
from dragonclf.errors import Refused  # noqa: E402

FAST = FetchConfig(deadline=3.0, read_timeout=2.0, connect_timeout=2.0, backoff=0.05, allow_private=True)


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


def fetch(url, cfg=FAST, **kw):
    with Fetcher(cfg, **kw) as f:
        return f.fetch(url)


def test_good_jpeg_png_webp_arrive_byte_for_byte(server):
    files = [p for p in gradio_images() if p.suffix == ".jpg"][:1] + \
            [p for p in gradio_images() if p.suffix == ".png"][:1] + real_photos()[:1]
    for i, f in enumerate(files):
        r = fetch(server.add_file(f"/ok{i}{f.suffix}", f))
        assert r.ok, (f, r.reason, r.detail)
        assert r.data == f.read_bytes()
        assert r.reason is None and r.status == 200


@pytest.mark.parametrize("body,ctype,reason", [
    (b"<!DOCTYPE html><html><body>not found</body></html>", "image/jpeg", "not-an-image"),
    (b"\xff\xd8\xff\xe0 a real jpeg head", "text/html; charset=utf-8", "not-an-image"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/jpeg", "svg"),
    (b"<svg></svg>", "image/svg+xml", "svg"),
    (b"plain words, not pixels at all", "application/octet-stream", "not-an-image"),
    (b"", "image/jpeg", "empty"),
])
def test_lies_about_content_are_refused(server, body, ctype, reason):
    r = fetch(server.add_bytes("/x.jpg", body, ctype))
    assert not r.ok and r.reason == reason and r.data == b""


def test_404_is_final_but_500_is_retried(server):
    r = fetch(server.add_status("/gone.jpg", 404))
    assert r.reason == "http-404" and r.attempts == 1 and server.hits["/gone.jpg"] == 1
    r = fetch(server.add_status("/err.jpg", 500))
    assert r.reason == "http-500" and r.attempts == FAST.retries + 1
    assert server.hits["/err.jpg"] == FAST.retries + 1


def test_429_with_retry_after_then_success(server):
    data = real_photos()[0].read_bytes()
    state = {"n": 0}

    def handler(h):
        state["n"] += 1
        if state["n"] == 1:
            h.send_response(429)
            h.send_header("Retry-After", "0")
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            h.send_response(200)
            h.send_header("Content-Type", "image/webp")
            h.end_headers()
            h.wfile.write(data)

    r = fetch(server.add("/busy.webp", handler))
    assert r.ok and r.attempts == 2 and r.data == data


def test_dropped_connection_is_retried(server):
    data = real_photos()[1].read_bytes()
    r = fetch(server.add_flaky("/flaky.webp", data, failures=1))
    assert r.ok and r.attempts == 2 and r.data == data


def test_body_shorter_than_announced_is_truncated(server):
    r = fetch(server.add_bytes("/short.jpg", b"\xff\xd8\xff\xe0" + bytes(100), length=5000))
    assert r.reason == "truncated"


def test_trickle_forever_stops_at_the_deadline(server):
    cfg = FetchConfig(deadline=1.0, read_timeout=5.0, allow_private=True, retries=0)
    t = time.monotonic()
    r = fetch(server.add_trickle("/slow.jpg"), cfg)
    took = time.monotonic() - t
    assert r.reason == "deadline"
    assert 0.9 < took < 2.0


def test_silent_server_times_out(server):
    def handler(h):
        time.sleep(3)  # says nothing at all

    cfg = FetchConfig(deadline=5.0, read_timeout=0.5, allow_private=True, retries=0)
    t = time.monotonic()
    r = fetch(server.add("/mute.jpg", handler), cfg)
    assert r.reason == "timeout" and time.monotonic() - t < 1.5


@pytest.mark.parametrize("announce", [True, False])
def test_50mb_body_is_cut_off_at_the_byte_cap(server, announce):
    cfg = FetchConfig(max_bytes=2_000_000, allow_private=True)
    t = time.monotonic()
    r = fetch(server.add_big("/huge.jpg", 50_000_000, announce=announce), cfg)
    assert r.reason == "too-many-bytes" and r.data == b""
    assert time.monotonic() - t < 2.0


def test_redirects_are_followed_but_loops_and_chains_refused(server):
    photo = real_photos()[2]
    target = server.add_file("/final.webp", photo)
    server.add_redirect("/r1", "/r2", 301)
    server.add_redirect("/r2", target, 307)
    r = fetch(server.url("/r1"))
    assert r.ok and r.final_url == target and r.data == photo.read_bytes()

    server.add_redirect("/loopA", "/loopB")
    server.add_redirect("/loopB", "/loopA")
    r = fetch(server.url("/loopA"))
    assert r.reason == "redirect-loop" and server.hits["/loopA"] == 1

    for i in range(8):
        server.add_redirect(f"/chain{i}", f"/chain{i + 1}")
    r = fetch(server.url("/chain0"))
    assert r.reason == "too-many-redirects" and server.hits["/chain6"] == 0


def test_same_url_twice_is_fetched_once_fragment_and_encoding_ignored(server):
    photo = real_photos()[3]
    server.add_file("/odd%20name%C3%BC.webp", photo)
    urls = [server.url("/odd name\u00fc.webp#one"), server.url("/odd%20name%C3%BC.webp#two")]
    with Fetcher(FAST) as f:
        results = list(f.fetch_many(urls))
    assert len(results) == 1 and results[0].ok and results[0].data == photo.read_bytes()
    assert server.hits["/odd%20name%C3%BC.webp"] == 1


def test_normalise_url():
    assert normalise_url("HTTP://Example.COM:80/a b#x") == "http://example.com/a%20b"
    assert normalise_url("https://b\u00fccher.example/%41%zz") == "https://xn--bcher-kva.example/%41%25zz"
    assert normalise_url("https://example.com:8443") == "https://example.com:8443/"
    for bad, reason in [("ftp://x/y.jpg", "bad-scheme"), ("file:///etc/passwd", "bad-scheme"),
                        ("http://user:pw@evil.example/", "bad-url"), ("http://[::1/", "bad-url"),
                        ("/relative.jpg", "bad-scheme"), ("http:///nohost", "bad-url")]:
        with pytest.raises(Refused) as e:
            normalise_url(bad)
        assert e.value.reason == reason, bad


def test_bad_urls_are_counted_refusals_not_exceptions():
    r = fetch("javascript:alert(1)")
    assert not r.ok and r.reason == "bad-scheme"


def test_is_public_address():
    for ip in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254", "0.0.0.0",
               "100.64.0.1", "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "240.0.0.1"]:
        assert not download.is_public_address(ip), ip
    for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"]:
        assert download.is_public_address(ip), ip


@pytest.mark.parametrize("ip", [
    "2002:7f00:1::1", "2002:a00:1::1", "2002:a9fe:a9fe::1",  # 6to4 around 127.0.0.1, 10.0.0.1, 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",  # NAT64 around loopback / metadata / private
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fec0::1", "fec0:0:0:1::5",  # site-local
])
def test_ipv6_forms_that_reach_private_ipv4_or_site_local_are_not_public(ip):
    assert not download.is_public_address(ip)


def test_ipv6_forms_that_embed_a_public_ipv4_stay_public():
    assert download.is_public_address("2002:808:808::1") and download.is_public_address("64:ff9b::808:808")


# --------------------------------------------------------------------------- SSRF


@pytest.fixture
def loopback_only(monkeypatch):
    """Any connection attempt outside 127.0.0.0/8 fails the test (and is never sent)."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        attempts.append(address)
        if not str(address[0]).startswith("127."):
            raise AssertionError(f"tried to connect to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def fake_dns(monkeypatch, table):
    """Patch the resolver: names in `table` answer the given addresses; others fail."""
    calls = []

    def getaddrinfo(host, port, *a, **kw):
        calls.append(host)
        if host in table:
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (ip, port) if ":" not in ip else (ip, port, 0, 0)) for ip in table[host]]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


STRICT = FetchConfig(deadline=2.0, allow_private=False, retries=0)


def test_loopback_url_refused_without_connecting(server, loopback_only):
    r = fetch(server.add_file("/a.webp", real_photos()[0]), STRICT)
    assert r.reason == "private-address" and loopback_only == [] and server.hits["/a.webp"] == 0


def test_private_urls_setting_allows_loopback(server, monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    assert fetch(server.add_file("/a.webp", real_photos()[0]), FetchConfig()).ok
    monkeypatch.delenv("DRAGONCLF_ALLOW_PRIVATE_URLS")
    assert fetch(server.url("/a.webp"), FetchConfig()).reason == "private-address"


@pytest.mark.parametrize("answers", [["169.254.169.254"], ["10.0.0.7"], ["fe80::1"],
                                     ["127.0.0.2", "192.168.1.1"]])
def test_name_resolving_to_private_address_refused_before_connecting(monkeypatch, loopback_only, answers):
    monkeypatch.setattr(download, "is_public_address", lambda ip: ip == "127.0.0.2")  # pretend .2 is the internet
    fake_dns(monkeypatch, {"metadata.example": answers})
    r = fetch("http://metadata.example/latest/meta-data/", STRICT)
    assert r.reason == "private-address" and loopback_only == []


def test_redirect_to_loopback_refused_when_private_not_allowed(monkeypatch, loopback_only):
    monkeypatch.setattr(download, "is_public_address", lambda ip: ip == "127.0.0.2")
    with LoopbackServer() as inside, LoopbackServer(host="127.0.0.2") as outside:
        inside.add_file("/secret.webp", real_photos()[0])
        outside.add_redirect("/img.jpg", inside.url("/secret.webp"))
        fake_dns(monkeypatch, {"cdn.example": ["127.0.0.2"], "127.0.0.1": ["127.0.0.1"]})
        r = fetch(f"http://cdn.example:{outside.port}/img.jpg", STRICT)
        assert r.reason == "private-address"
        assert outside.hits["/img.jpg"] == 1 and inside.hits["/secret.webp"] == 0
        assert all(addr[0] == "127.0.0.2" for addr in loopback_only)


def test_connects_to_the_checked_address_not_a_second_dns_answer(monkeypatch, loopback_only):
    """DNS rebinding: the name is resolved once; the connection goes to that answer."""
    monkeypatch.setattr(download, "is_public_address", lambda ip: ip == "127.0.0.2")
    with LoopbackServer(host="127.0.0.2") as outside:
        outside.add_file("/a.webp", real_photos()[0])
        answers = iter([["127.0.0.2"], ["127.0.0.1"]])
        calls = []

        def getaddrinfo(host, port, *a, **kw):
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in next(answers)]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        r = fetch(f"http://rebind.example:{outside.port}/a.webp", STRICT)
        assert r.ok and calls == ["rebind.example"]
        assert [a[0] for a in loopback_only] == ["127.0.0.2"]


def test_unknown_host_is_a_dns_refusal(monkeypatch, loopback_only):
    fake_dns(monkeypatch, {})
    assert fetch("http://no-such-host.example/a.jpg", STRICT).reason == "dns-failed"


# --------------------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for images.test (made with the openssl command)."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=images.test",
                    "-addext", "subjectAltName=DNS:images.test", "-keyout", d / "key.pem", "-out", d / "cert.pem"],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_https_checks_the_certificate_and_host_name_while_connecting_to_the_checked_ip(monkeypatch, loopback_only,
                                                                                        cert):
    import ssl

    with LoopbackServer(tls=cert) as server:
        server.add_file("/a.webp", real_photos()[0])
        fake_dns(monkeypatch, {"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        trusting = ssl.create_default_context(cafile=cert[0])
        with Fetcher(FAST, tls=trusting) as f:
            good = f.fetch(f"https://images.test:{server.port}/a.webp")
            wrong_name = f.fetch(f"https://other.test:{server.port}/a.webp")
        untrusted = fetch(f"https://images.test:{server.port}/a.webp")  # default context: not our CA
    assert good.ok and good.data == real_photos()[0].read_bytes()
    assert wrong_name.reason == "tls-error" and "other.test" in wrong_name.detail
    assert untrusted.reason == "tls-error"
    assert {a[0] for a in loopback_only} == {"127.0.0.1"}


def test_https_redirect_to_plain_http_is_refused(monkeypatch, cert):
    import ssl

    with LoopbackServer(tls=cert) as secure, LoopbackServer() as plain:
        plain.add_file("/a.webp", real_photos()[0])
        secure.add_redirect("/img.jpg", f"http://images.test:{plain.port}/a.webp")
        fake_dns(monkeypatch, {"images.test": ["127.0.0.1"]})
        with Fetcher(FAST, tls=ssl.create_default_context(cafile=cert[0])) as f:
            r = f.fetch(f"https://images.test:{secure.port}/img.jpg")
    assert r.reason == "insecure-redirect" and plain.hits["/a.webp"] == 0


# --------------------------------------------------------------------------- concurrency


def test_many_in_flight_but_bounded_per_host():
    with LoopbackServer(latency=0.2) as server:
        photo = real_photos()[0]
        urls = [server.add_file(f"/p{i}.webp", photo) for i in range(40)]
        cfg = FetchConfig(workers=32, per_host=8, allow_private=True)
        with Fetcher(cfg) as f:
            results = list(f.fetch_many(urls))
        assert len(results) == 40 and all(r.ok for r in results)
        assert 4 <= server.max_in_flight <= 8  # many at once (not one at a time), never more than per_host


def test_cancel_stops_in_flight_downloads_promptly(server):
    urls = [server.add_trickle(f"/t{i}.jpg") for i in range(5)]
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t = time.monotonic()
    with Fetcher(FetchConfig(deadline=30, read_timeout=30, allow_private=True), cancel=cancel) as f:
        results = list(f.fetch_many(urls))
    assert time.monotonic() - t < 1.5
    assert [r.reason for r in results] == ["cancelled"] * 5
