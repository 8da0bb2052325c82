"""Collect end to end: a loopback server plays the web, a real store keeps the images.

Every URL must end as a stored image, a counted refusal with its reason, or a
flagged duplicate/conflict, within its deadline; provenance must reach the
manifest; a stopped or killed run must leave no partial files and continue
without duplicates and without searching again.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the loopback server helper beside this file
from httpserver import LoopbackServer, gradio_images, png_bomb, real_photos  # noqa: E402

from dragonclf.collect import collect, collect_classes, combine  # noqa: E402
from dragonclf.download import FetchConfig  # noqa: E402
from dragonclf.errors import DragonError  # noqa: E402
from dragonclf.search import SearchResult  # noqa: E402
from dragonclf.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICK = FetchConfig(deadline=2.0, read_timeout=2.0, connect_timeout=2.0, retries=1, backoff=0.05)


@pytest.fixture
def allow_loopback(monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="session")
def bomb() -> bytes:
    return png_bomb(12000)


def files_on_disk(store):
    """Every file under the dataset except the manifest and docs."""
    return sorted(p for p in store.root.rglob("*") if p.is_file() and not p.name.startswith("manifest")
                  and p.relative_to(store.root).parts[0] not in (".tmp", ".files.lock"))


def assert_consistent(store):
    """No temp leftovers; every active row has its file and every image file has a row."""
    assert not list((store.root / ".tmp").rglob("*.part"))  # (a live writer keeps its own empty folder and lock)
    rows = store.images()
    assert sorted(r.path for r in rows) == sorted(p for p in files_on_disk(store) if ".trash" not in p.parts)
    assert store.check()["ok"]


def test_every_bad_input_ends_stored_refused_or_flagged(server, allow_loopback, bomb):
    photos = real_photos()
    jpg = next(p for p in gradio_images() if p.name == "cheetah.jpg")
    png = next(p for p in gradio_images() if p.name == "bus.png")
    store = Store.open("web", create=True)
    store.add_label("cats")
    assert store.ingest(photos[5].read_bytes(), "cats", {"origin": "upload"}).outcome == "added"

    server.add_redirect("/loop2", "/loop1")
    urls = [
        server.add_file("/good.jpg", jpg),
        server.add_file("/good.png", png),
        server.add_file("/good.webp", photos[0]),
        server.add_file("/odd%20name%C3%A9.webp", photos[1]),
        server.url("/odd name\u00e9.webp#section"),  # the same image: fragment and encoding differ
        server.add_file("/twice.webp", photos[2]),
        server.url("/twice.webp"),  # the same URL twice
        server.add_file("/other-label.webp", photos[5]),  # already stored under "cats"
        server.add_bytes("/page.jpg", b"<!doctype html><html><body>hi</body></html>", "image/jpeg"),
        server.add_bytes("/cut.jpg", jpg.read_bytes()[: jpg.stat().st_size // 2], "image/jpeg"),
        server.add_bytes("/zero.jpg", b"", "image/jpeg"),
        server.add_status("/missing.jpg", 404),
        server.add_status("/broken.jpg", 500),
        server.add_trickle("/slow.jpg"),
        server.add_big("/huge.jpg", 50_000_000, announce=False),
        server.add_redirect("/loop1", "/loop2"),
        server.add_bytes("/bomb.png", bomb, "image/png"),
        "ftp://example.com/a.jpg",
    ]
    t = time.monotonic()
    report = collect(store, "dogs", urls=urls, cfg=QUICK)
    took = time.monotonic() - t

    d = report.as_dict()
    by_url = {i.url: i for i in report.items}
    assert len(report.items) == len(urls)
    assert sorted(i.reason for i in report.items if i.outcome == "duplicate") == ["same-url", "same-url"]
    assert by_url[server.url("/other-label.webp")].outcome == "conflict"
    assert d["refused"] == {"bad-scheme": 1, "deadline": 1, "empty": 1, "http-404": 1, "http-500": 1,
                            "not-an-image": 1, "redirect-loop": 1, "too-many-bytes": 1, "too-many-pixels": 1,
                            "truncated": 1}
    # stored: jpg, png, webp, the odd-encoding webp, twice.webp; duplicates: the two repeated URLs
    assert d["stored"] == 5 and d["duplicates"] == 2 and d["conflicts"] == 1
    assert took < QUICK.deadline + 3  # the trickle and the 50 MB body end at their deadline/cap

    assert server.hits["/odd%20name%C3%A9.webp"] == 1 and server.hits["/twice.webp"] == 1
    assert server.hits["/broken.jpg"] == QUICK.retries + 1 and server.hits["/missing.jpg"] == 1

    rows = {r.source: r for r in store.images(label="dogs")}
    assert len(rows) == 5
    r = rows[server.url("/good.jpg")]
    assert r.origin == "url" and r.image_url == server.url("/good.jpg") and r.label == "dogs"
    assert store.status()["conflicts"] >= 1
    assert_consistent(store)


def test_private_addresses_refused_by_default_and_never_contacted(server, monkeypatch):
    monkeypatch.delenv("DRAGONCLF_ALLOW_PRIVATE_URLS", raising=False)
    contacted = []
    real_connect = socket.socket.connect

    def guarded(sock, address):
        contacted.append(address)
        if not str(address[0]).startswith("127."):
            raise AssertionError(f"tried to connect to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, port, *a, **kw):
        ips = {"metadata.example": "169.254.169.254", "intranet.example": "10.0.0.5", "127.0.0.1": "127.0.0.1"}
        if host not in ips:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ips[host], port))]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    store = Store.open("web", create=True)
    urls = [server.add_file("/a.webp", real_photos()[0]), "http://metadata.example/latest/",
            "http://intranet.example/x.jpg"]
    report = collect(store, "x", urls=urls, cfg=QUICK)
    assert report.as_dict()["refused"] == {"private-address": 3} and report.stored == 0
    assert contacted == [] and server.hits["/a.webp"] == 0


class FakeEngine:
    """The only fake: a search engine whose results point at the loopback server."""

    name = "fake"

    def __init__(self, server, paths_by_query):
        self.server, self.paths_by_query, self.calls = server, paths_by_query, []

    def images(self, query, *, max_results, filters):
        self.calls.append(query)
        return [SearchResult(self.server.url(p), f"https://pages.example/{i}", f"{query} #{i}", 320, 240, self.name)
                for i, p in enumerate(self.paths_by_query.get(query, [])[:max_results])]


def test_search_results_carry_provenance_and_a_rerun_neither_searches_nor_fetches(server, allow_loopback):
    photos = real_photos()
    paths = [f"/fish{i}.webp" for i in range(6)]
    for p, f in zip(paths, photos[:6]):
        server.add_file(p, f)
    engine = FakeEngine(server, {"goldfish": paths[:4], "fish photo": paths[3:]})
    store = Store.open("web", create=True)
    report = collect(store, "fish", query="goldfish", max_images=6, engine=engine,
                     filters={"license_image": "Public"}, cfg=QUICK)
    assert report.stored == 6 and engine.calls == ["goldfish", "fish photo", "fish close up"]
    row = next(r for r in store.images(label="fish") if r.source == server.url(paths[0]))
    assert (row.query, row.engine, row.license, row.title, row.page_url) == (
        "goldfish", "fake", "Public", "goldfish #0", "https://pages.example/0")

    again = FakeEngine(server, {})
    hits_before = sum(server.hits.values())
    report2 = collect(store, "fish", query="goldfish", max_images=6, engine=again, filters={"license_image": "Public"},
                      cfg=QUICK)
    assert again.calls == [] and report2.cached == ["goldfish", "fish photo", "fish close up"]
    assert report2.stored == 0 and report2.skipped == 6 and sum(server.hits.values()) == hits_before


def test_max_images_stores_exactly_that_many_and_stops_fetching_early(server, allow_loopback):
    paths = [server.add_file(f"/p{i}.webp", f) for i, f in enumerate(real_photos()[:40])]
    engine = FakeEngine(server, {"things": [p.split(str(server.port))[1] for p in paths]})
    store = Store.open("web", create=True)
    report = collect(store, "things", max_images=8, engine=engine, cfg=QUICK)
    assert report.stored == 8 == len(store.images(label="things"))
    assert sum(server.hits.values()) <= 12


def test_stop_then_rerun_continues_without_duplicates(allow_loopback):
    with LoopbackServer(latency=0.1) as server:
        urls = [server.add_file(f"/p{i}.webp", f) for i, f in enumerate(real_photos()[:40])]
        store = Store.open("web", create=True)
        cancel = threading.Event()
        progress = []

        def on_item(item):
            if item.outcome == "added" and sum(1 for _ in store.images(label="birds")) >= 5:
                cancel.set()

        first = collect(store, "birds", urls=urls, cancel=cancel, on_item=on_item,
                        progress=lambda f, m: progress.append(f), cfg=QUICK)
        assert first.cancelled and 5 <= first.stored < 40
        assert first.unfinished > 0 and first.stored + first.unfinished + first.duplicates == 40
        assert_consistent(store)
        assert progress == sorted(progress) and all(0 <= f <= 1 for f in progress)

        second = collect(store, "birds", urls=urls, cfg=QUICK)
        assert second.skipped == first.stored and second.duplicates == 0
        assert first.stored + second.stored == 40 == len(store.images(label="birds"))
        for i, f in enumerate(urls):  # images stored in the first run were not fetched again
            assert server.hits[f"/p{i}.webp"] <= 2
        assert_consistent(store)


def test_an_image_stored_before_its_url_was_recorded_is_not_fetched_again(server, allow_loopback):
    """A kill can land between storing an image and recording its URL; the manifest row is enough."""
    photos = real_photos()
    urls = [server.add_file(f"/r{i}.webp", f) for i, f in enumerate(photos[:3])]
    store = Store.open("web", create=True)
    store.add_label("birds")
    store.ingest(photos[0].read_bytes(), "birds", {"origin": "url", "source": urls[0]})  # no mark_url
    report = collect(store, "birds", urls=urls, cfg=QUICK)
    assert (report.skipped, report.stored, report.duplicates) == (1, 2, 0)
    assert server.hits["/r0.webp"] == 0 and server.hits["/r1.webp"] == 1
    assert len(store.images(label="birds")) == 3


def run_cli(home, *args, extra_env=None, **kw):
    env = {**os.environ, "DRAGONCLF_HOME": str(home), "DRAGONCLF_ALLOW_PRIVATE_URLS": "1", **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "dragonclf", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


JSON_KEYS = ("stored", "duplicates", "conflicts", "refused", "seconds")


def assert_json_shape(result: dict) -> None:
    """The issue's five keys, always, with their types (extra keys are allowed)."""
    assert set(JSON_KEYS) <= set(result)
    for k in ("stored", "duplicates", "conflicts"):
        assert type(result[k]) is int, k
    assert type(result["seconds"]) is float and 0 <= result["seconds"] < 60
    assert isinstance(result["refused"], dict)
    assert all(type(k) is str and type(v) is int for k, v in result["refused"].items())


def test_cli_json_output(server, home, tmp_path):
    photos = real_photos()
    store = Store.open("mine", create=True)  # one image already stored under another label: a conflict
    store.add_label("other")
    assert store.ingest(photos[3].read_bytes(), "other", {"origin": "upload"}).outcome == "added"
    store.close()
    urls = [server.add_file(f"/c{i}.webp", f) for i, f in enumerate(photos[:4])]
    urls += [server.add_status("/nope.jpg", 404), server.add_bytes("/page.jpg", b"<html>hi</html>", "image/jpeg"),
             urls[0]]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(["# my list", *urls, ""]))
    proc = run_cli(home, "collect", "--dataset", "mine", "--label", "Viserion 🐉", "--urls", str(listing), "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert_json_shape(result)
    assert {k: result[k] for k in JSON_KEYS if k != "seconds"} == {
        "stored": 3, "duplicates": 1, "conflicts": 1, "refused": {"http-404": 1, "not-an-image": 1}}
    assert {lab.display: lab.count for lab in Store.open("mine").labels()} == {"Viserion 🐉": 3, "other": 1}

    # a rerun has nothing left to do: the same five keys, zeros (refusals were recorded, not retried)
    proc = run_cli(home, "collect", "--dataset", "mine", "--label", "Viserion 🐉", "--urls", str(listing), "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    again = json.loads(out)
    assert_json_shape(again)
    assert {k: again[k] for k in JSON_KEYS if k != "seconds"} == {
        "stored": 0, "duplicates": 1, "conflicts": 0, "refused": {}}

    proc = run_cli(home, "collect", "--dataset", "mine", "--label", "x", "--urls", str(tmp_path / "absent.txt"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.startswith("error: cannot read the URL list") and "Traceback" not in err


def test_cli_queries_searches_exactly_those_and_query_adds_variations(server, home, tmp_path):
    import fake_search

    photos = real_photos()
    paths = {"red fox": [f"/fox{i}.webp" for i in range(4)], "owl": [f"/owl{i}.webp" for i in range(4)]}
    for i in range(4):
        server.add_file(f"/fox{i}.webp", photos[10 + i])
        server.add_file(f"/owl{i}.webp", photos[20 + i])
    calls = fake_search.write_config(tmp_path / "fake.json", server, paths)
    env = {"DRAGONCLF_SEARCH_ENGINE": "fake_search:engine", "FAKE_SEARCH_CONFIG": str(tmp_path / "fake.json"),
           "PYTHONPATH": str(REPO / "tests")}

    proc = run_cli(home, "collect", "--dataset", "wild", "--label", "fox", "--queries", "red fox | red fox snow |",
                   "--max", "3", "--json", extra_env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["stored"] == 3
    assert calls.read_text().splitlines() == ["red fox", "red fox snow"]  # exactly those, no "fox photo"
    assert {r.query for r in Store.open("wild").images(label="fox")} == {"red fox"}

    calls.unlink()
    proc = run_cli(home, "collect", "--dataset", "wild", "--label", "owl", "--query", "owl at night", "--max", "3",
                   "--json", extra_env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert calls.read_text().splitlines() == ["owl at night", "owl photo", "owl close up"]

    proc = run_cli(home, "collect", "--dataset", "new", "--label", "x", "--queries", " | ", extra_env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.startswith("error: --queries needs at least one search")
    assert not (home / "datasets" / "new").exists()  # a typo creates nothing
    proc = run_cli(home, "collect", "--dataset", "wild", "--label", "x", "--query", "a", "--queries", "b")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "not allowed with argument" in err


def test_kill_9_leaves_no_partial_files_and_a_rerun_finishes(home, tmp_path):
    with LoopbackServer(latency=0.2) as server:
        urls = [server.add_file(f"/k{i}.webp", f) for i, f in enumerate(real_photos()[:60])]
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(urls))
        proc = run_cli(home, "collect", "--dataset", "k", "--label", "kill", "--urls", str(listing), "--json")
        folder = home / "datasets" / "k" / "kill"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(folder.glob("*.jpg"))) < 8:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        stored_before = len(list(folder.glob("*.jpg")))
        assert 8 <= stored_before < 60

        store = Store.open("k")  # opening recovers what the kill interrupted
        assert_consistent(store)
        recovered = len(store.images(label="kill"))
        assert recovered >= stored_before - 4  # at most the ingests in flight (4 threads) were rolled back
        rerun = run_cli(home, "collect", "--dataset", "k", "--label", "kill", "--urls", str(listing), "--json")
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        result = json.loads(out)
        # every image the killed run stored is skipped, even one killed before its URL was recorded
        assert result["skipped"] == recovered and result["duplicates"] == 0
        assert result["stored"] == 60 - recovered
        store.close()
        store = Store.open("k")
        assert len(store.images(label="kill")) == 60
        assert_consistent(store)


def test_collect_classes_reports_per_class_with_overall_progress(server, allow_loopback):
    photos = real_photos()
    for i in range(6):
        server.add_file(f"/m{i}.webp", photos[40 + i])
    engine = FakeEngine(server, {"monuments": [f"/m{i}.webp" for i in range(3)],
                                 "towers": [f"/m{i}.webp" for i in range(3, 6)]})
    store = Store.open("multi", create=True)
    progress, items = [], []
    reports = collect_classes(store, [("monument", "monuments"), ("tower", "towers"), ("  ", None)], per_class=3,
                              engine=engine, progress=lambda f, m: progress.append(f),
                              on_item=lambda label, item: items.append((label, item.outcome)), cfg=QUICK)
    assert [(r.label, r.stored) for r in reports] == [("monument", 3), ("tower", 3)]
    assert combine(reports)["stored"] == 6 and progress == sorted(progress) and progress[-1] == 1.0
    assert items.count(("tower", "added")) == 3
    with pytest.raises(DragonError):
        collect_classes(store, [], per_class=3, engine=engine)


def test_ctrl_c_stops_cleanly_without_a_traceback(home, tmp_path):
    with LoopbackServer(latency=0.2) as server:
        urls = [server.add_file(f"/i{i}.webp", f) for i, f in enumerate(real_photos()[:60])]
        urls.append(server.add_trickle("/forever.jpg"))
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(urls))
        proc = run_cli(home, "collect", "--dataset", "c", "--label", "ctrl", "--urls", str(listing))
        folder = home / "datasets" / "c" / "ctrl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(folder.glob("*.jpg"))) < 5:
            time.sleep(0.05)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert time.monotonic() - t < 5  # in-flight downloads (the trickle too) are cut at once
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        store = Store.open("c")
        assert 5 <= len(store.images(label="ctrl")) < 60
        assert_consistent(store)


def test_an_unbounded_number_of_images_per_class_is_refused(home):
    """per_class is bounded on the server, not only by the browser's slider."""
    store = Store.open("bounded", create=True)
    for n in (10**6, 0, -5):
        with pytest.raises(DragonError, match="between 1 and"):
            collect_classes(store, [("cats", None)], n)
    assert store.images(status=None) == []
