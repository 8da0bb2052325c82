"""The Collect tab through its API: classes and their queries in, images stored per class, summary out."""

import re
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError

import fake_search
from browser import chromium_page, needs_chromium
from dragonclf.store import Store
from httpserver import LoopbackServer, real_photos
from test_collect import assert_consistent

FILTERS = ("moderate", "", "", "", "")  # safesearch, size, type, layout, license


@pytest.fixture
def web(monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    with LoopbackServer() as server:
        photos = real_photos()
        paths = {"fish": [], "tool": []}
        for i, f in enumerate(photos[:8]):
            paths["fish"].append(server.add_file(f"/fish/{i}{f.suffix}", f).split(str(server.port), 1)[1])
        for i, f in enumerate(photos[-8:]):
            paths["tool"].append(server.add_file(f"/tool/{i}{f.suffix}", f).split(str(server.port), 1)[1])
        paths["tool"].append(server.add_bytes("/tool/fake.jpg", b"<html>not an image</html>").split(str(server.port), 1)[1])
        calls = fake_search.configure(server, paths)
        yield server, calls


def test_collect_tab_stores_each_class_and_reports_refusals(client, web):
    Store.open("dragons", create=True)
    result = client.predict("dragons", "fish\ntool: tool photo", "", 5, *FILTERS, api_name="/collect")
    summary = result[0]  # (the State output is not sent to clients)
    assert "Done." in summary and "| fish | 5 |" in summary and "| tool | 5 |" in summary
    status = Store.open("dragons").status()
    assert status["labels"] == {"fish": 5, "tool": 5}
    row = Store.open("dragons").images(label="tool")[0]
    assert row.origin == "url" and row.engine == "fake" and row.query == "tool photo"


def test_a_class_whose_search_fails_says_why_leaves_no_label_and_the_next_goes_on(client, web):
    Store.open("dragons", create=True)
    result = client.predict("dragons", "Drogon\nfish", "", 5, *FILTERS, api_name="/collect")
    summary = result[0]
    assert "1 of 2 classes could not be collected" in summary and "| fish | 5 |" in summary, summary
    assert "⚠️ **Drogon**: no images found for 'Drogon'" in summary
    assert Store.open("dragons").status()["labels"] == {"fish": 5}  # no empty "Drogon 0"


def test_collect_tab_without_classes_is_a_clear_error(client, web):
    Store.open("dragons", create=True)
    with pytest.raises(AppError, match="at least one class"):
        client.predict("dragons", "   ", "", 5, *FILTERS, api_name="/collect")


def test_suggested_queries_are_one_editable_line_per_class(client):
    text = client.predict("fish\ntool: tool photo", "", api_name="/suggest_queries")
    assert text == "fish: fish | fish photo | fish close up\ntool: tool photo | tool close up"

    # an edited line survives a new suggestion; a removed class's untouched line goes, an edited one stays
    edited = "fish: goldfish | koi pond\ntool: tool photo | tool close up\nold: my own words"
    text = client.predict("fish\nbird", edited, api_name="/suggest_queries")
    assert text == "fish: goldfish | koi pond\nbird: bird | bird photo | bird close up\nold: my own words"


def test_start_searches_exactly_the_edited_queries(client, web):
    server, calls = web
    Store.open("dragons", create=True)
    queries = "fish: fish underwater |  fish in a pond | fish underwater"  # repeats and spaces are tidied
    result = client.predict("dragons", "fish\ntool", queries, 5, *FILTERS, api_name="/collect")
    assert "Done." in result[0]
    # fish: only the edited queries (the first already finds every image); tool: its default searches
    assert calls == ["fish underwater", "fish in a pond", "tool", "tool photo", "tool close up"]
    store = Store.open("dragons")
    assert store.status()["labels"] == {"fish": 5, "tool": 5}
    assert {r.query for r in store.images(label="fish")} == {"fish underwater"}


@pytest.mark.parametrize("queries, message", [
    ("bird: bird photo", "'bird', which is not in Classes"),
    ("fish:  |  ", "no searches for 'fish'"),
    ("fish photo", "line 1"),
    ("fish: a\nfish: b", "'fish' has two lines"),
    ("", "'fish' listed twice"),
])
def test_bad_query_lines_are_refused_before_anything_runs(client, web, queries, message):
    server, calls = web
    Store.open("dragons", create=True)
    classes = "fish\n fish " if "twice" in message else "fish"
    with pytest.raises(AppError, match=message):
        client.predict("dragons", classes, queries, 5, *FILTERS, api_name="/collect")
    assert calls == [] and sum(server.hits.values()) == 0
    assert Store.open("dragons").status()["labels"] == {}


NINE = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def test_more_classes_than_galleries_are_all_collected_and_all_shown(client, monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    photos = real_photos()
    with LoopbackServer() as server:
        paths = {label: [f"/{label}/{i}.webp" for i in range(5)] for label in NINE}
        for n, label in enumerate(NINE):
            for i in range(5):
                server.add_file(f"/{label}/{i}.webp", photos[n * 5 + i])
        fake_search.configure(server, paths)
        Store.open("many", create=True)
        summary, *galleries = client.predict("many", "\n".join(NINE), "", 5, *FILTERS, api_name="/collect")
    assert Store.open("many").status()["labels"] == {label: 5 for label in NINE}
    assert "Done." in summary and "9 classes, 8 galleries" in summary and "(hotel, india)" in summary
    assert all(f"| {label} | 5 |" in summary for label in NINE)
    assert len(galleries) == 8
    assert [g["label"] for g in galleries] == NINE[:7] + ["Other classes: hotel, india"]
    assert [len(g["value"]) for g in galleries] == [5] * 7 + [10]
    # the shared last gallery: both classes, each picture captioned with its class
    assert sorted(item["caption"].split(" · ")[0] for item in galleries[-1]["value"]) == ["hotel"] * 5 + ["india"] * 5
    assert all(" · " not in item["caption"] for item in galleries[0]["value"])


# --- Stop and a closed tab: the worker ends promptly, nothing half-written, a rerun continues


def collect_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "collect" and t.is_alive()]


@pytest.fixture
def slow_web(monkeypatch):
    """60 real photos behind 0.5 s of latency: a collection takes seconds, so there is time to stop it."""
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    with LoopbackServer(latency=0.5) as server:
        paths = [f"/slow/{i}.webp" for i in range(60)]
        for p, f in zip(paths, real_photos()[:60]):
            server.add_file(p, f)
        calls = fake_search.configure(server, {"fish": paths})
        yield server, calls


def wait_for_images(folder: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("*.jpg"))) < n:
        assert time.monotonic() < deadline, f"fewer than {n} images arrived in {timeout} s"
        time.sleep(0.05)


def assert_ends_and_reruns(home, server, calls, client):
    """The worker is gone within seconds, the store is whole, and Start again tops up from the cache."""
    t = time.monotonic()
    while collect_threads():
        assert time.monotonic() - t < 10, "the collection kept running after its tab stopped it"
        time.sleep(0.05)
    hits = sum(server.hits.values())
    time.sleep(1.0)
    assert sum(server.hits.values()) == hits  # nothing fetched after the end

    store = Store.open("dragons")
    assert_consistent(store)
    first = {r.source for r in store.images(label="fish")}
    assert 3 <= len(first) < 60

    calls.clear()
    summary = client.predict("dragons", "fish", "", 60, *FILTERS, api_name="/collect")[0]
    assert calls == []  # the search came from the cache
    assert "Done." in summary and f"| fish | {60 - len(first)} | 0 | 0 | 0 |" in summary
    rows = store.images(label="fish")
    assert len(rows) == 60 == len({r.source for r in rows})
    assert all(server.hits[s.split(str(server.port), 1)[1]] == 1 for s in first)  # not fetched again
    assert_consistent(store)


def test_stop_ends_the_collection_and_start_again_continues(client, slow_web, home):
    server, calls = slow_web
    Store.open("dragons", create=True)
    job = client.submit("dragons", "fish", "", 60, *FILTERS, api_name="/collect")
    wait_for_images(home / "datasets" / "dragons" / "fish", 3)
    # while it runs, the summary names the class and counts what is stored so far, and its gallery grows
    deadline = time.monotonic() + 10
    while not any(re.search(r"\| fish \| [1-9]", out[0]) for out in job.outputs()):
        assert time.monotonic() < deadline, job.outputs()[-1][0]
        time.sleep(0.1)
    running = next(out for out in job.outputs() if re.search(r"\| fish \| [1-9]", out[0]))
    assert running[0].startswith("Collecting **fish**…") and "stored so far" in running[0]
    assert running[1]["value"]
    message = client.predict(api_name="/stop_collect")
    assert "Start again continues" in message
    assert_ends_and_reruns(home, server, calls, client)
    assert job.done()


def test_closed_tab_stops_the_collection(client, slow_web, home, app_url):
    """A browser tab is a session with an event stream; closing it drops that stream and nothing else."""
    server, calls = slow_web
    Store.open("dragons", create=True)
    fn_index = next(d["id"] for d in client.config["dependencies"] if d.get("api_name") == "collect")
    session = uuid.uuid4().hex
    with httpx.Client(base_url=app_url, timeout=30) as http:
        joined = http.post("gradio_api/queue/join", json={
            "data": ["dragons", "fish", "", 60, *FILTERS], "fn_index": fn_index, "session_hash": session,
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        folder = home / "datasets" / "dragons" / "fish"
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():  # read as a browser does, until a few images are in
                assert "process_completed" not in line, line[:300]
                if len(list(folder.glob("*.jpg"))) >= 3:
                    break
        # leaving the `with` closes the connection, as closing the tab does
    assert_ends_and_reruns(home, server, calls, client)


def test_cancelled_job_stops_the_collection(client, slow_web, home):
    server, calls = slow_web
    Store.open("dragons", create=True)
    job = client.submit("dragons", "fish", "", 60, *FILTERS, api_name="/collect")
    wait_for_images(home / "datasets" / "dragons" / "fish", 3)
    job.cancel()
    assert_ends_and_reruns(home, server, calls, client)


# --- In a real browser: the Queries box fills itself and Start uses what the person edited

@needs_chromium
def test_queries_box_fills_on_leaving_classes_and_start_uses_the_edit(app_url, web):
    server, calls = web
    with chromium_page() as page:
        page.goto(app_url)
        page.fill("#new-dataset input, #new-dataset textarea", "dragons")
        page.click("#create-dataset")
        page.wait_for_selector("#dataset-counts:has-text('no labels yet')")
        page.get_by_role("tab", name="Collect").click()

        page.fill("#collect-classes textarea", "fish\ntool")
        page.keyboard.press("Tab")  # leaving the box suggests a line per class
        queries = page.locator("#collect-queries textarea")
        page.wait_for_function("document.querySelector('#collect-queries textarea').value.includes('tool close')")
        assert queries.input_value() == "fish: fish | fish photo | fish close up\ntool: tool | tool photo | tool close up"

        queries.fill("fish: fish in a tank\ntool: tool | tool photo | tool close up")
        page.fill("#collect-per-class input[type=number]", "5")
        page.keyboard.press("Tab")
        page.click("#collect-start")
        page.wait_for_selector("#collect-summary:has-text('Done.')", timeout=120_000)
    assert calls == ["fish in a tank", "tool", "tool photo", "tool close up"]
    store = Store.open("dragons")
    assert store.status()["labels"] == {"fish": 5, "tool": 5}
    assert {r.query for r in store.images(label="fish")} == {"fish in a tank"}
