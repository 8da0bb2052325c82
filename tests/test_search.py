"""Search: query variations, the on-disk cache, and DuckDuckGo failures made readable.

Only the engine is faked (there is no internet here): `FakeEngine` for the
cache, and a stand-in for `ddgs.DDGS` that raises ddgs's own exceptions for
the error mapping.
"""

import json
import time

import ddgs
import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from dragonclf import search
from dragonclf.errors import DragonError
from dragonclf.search import DuckDuckGo, Filters, SearchResult, query_variations, search_images


class FakeEngine:
    name = "fake"

    def __init__(self, per_query=5):
        self.calls = []
        self.per_query = per_query

    def images(self, query, *, max_results, filters):
        self.calls.append((query, max_results, filters))
        slug = query.replace(" ", "-")
        return [SearchResult(f"http://127.0.0.1:9/{slug}/{i}.jpg", f"http://127.0.0.1:9/{slug}", f"{query} {i}",
                             640, 480, self.name) for i in range(min(self.per_query, max_results))]


def test_query_variations_start_with_the_users_query_and_have_no_repeats():
    assert query_variations("Drogon", "drogon dragon")[0] == "drogon dragon"
    assert query_variations("Drogon") == ["Drogon", "Drogon photo", "Drogon close up"]
    assert query_variations("cat", "Cat photo") == ["Cat photo", "cat close up"]


def test_split_queries_tidies_what_a_person_typed():
    assert search.split_queries(" red fox |  Red  Fox| fox in snow || ") == ["red fox", "fox in snow"]
    assert search.split_queries(" | ") == []


def test_search_engine_named_in_the_environment_is_used_and_a_bad_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    assert search.engine_from_env().name == "fake"
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "no_such_module:engine")
    with pytest.raises(DragonError, match="DRAGONCLF_SEARCH_ENGINE='no_such_module:engine' names no engine"):
        search_images(["cats"], max_results=5)
    monkeypatch.delenv("DRAGONCLF_SEARCH_ENGINE")
    assert search.engine_from_env() is None


def test_second_search_comes_from_the_cache_not_the_engine(home):
    first = FakeEngine()
    out = search_images(["drogon", "drogon photo"], max_results=8, engine=first)
    assert len(first.calls) == 2 and out.searched == ["drogon", "drogon photo"]
    assert len(out.results) == 10 and out.results[0].query == "drogon" and out.results[-1].query == "drogon photo"
    assert list((home / "cache" / "search" / "fake").glob("*.json"))

    again = FakeEngine()
    out2 = search_images(["drogon", "drogon photo"], max_results=8, engine=again)
    assert again.calls == [] and out2.cached == ["drogon", "drogon photo"]
    assert [r.image_url for r in out2.results] == [r.image_url for r in out.results]


def test_cache_is_per_filters_and_serves_smaller_requests():
    e = FakeEngine(per_query=50)
    search_images(["viserion"], 20, engine=e)
    search_images(["viserion"], 10, engine=e)  # fewer than cached: served from cache
    assert len(e.calls) == 1
    search_images(["viserion"], 40, engine=e)  # more than the cache holds: search again
    search_images(["viserion"], 20, filters={"license_image": "Public"}, engine=e)
    assert len(e.calls) == 3 and e.calls[-1][2].license_image == "Public"


def test_enough_results_skip_the_remaining_queries():
    e = FakeEngine(per_query=30)
    out = search_images(["a", "b", "c"], 25, engine=e)
    assert [c[0] for c in e.calls] == ["a"] and len(out.results) == 25


def test_empty_answers_are_cached_only_briefly_and_say_what_to_do(home):
    e = FakeEngine(per_query=0)
    with pytest.raises(DragonError, match="no images found.*10-15 minutes"):
        search_images(["nothing"], 5, engine=e)
    with pytest.raises(DragonError):
        search_images(["nothing"], 5, engine=e)
    assert len(e.calls) == 1  # a retry right away does not knock on a locked door
    for f in (home / "cache" / "search" / "fake").glob("*.json"):
        entry = json.loads(f.read_text())
        f.write_text(json.dumps({**entry, "time": entry["time"] - search.EMPTY_TTL - 1}))
    with pytest.raises(DragonError):
        search_images(["nothing"], 5, engine=e)
    assert len(e.calls) == 2


def test_a_damaged_cache_file_means_searching_again(home):
    e = FakeEngine()
    search_images(["x"], 5, engine=e)
    for f in (home / "cache" / "search" / "fake").glob("*.json"):
        f.write_text("{not json")
    out = search_images(["x"], 5, engine=e)
    assert len(e.calls) == 2 and len(out.results) == 5


def test_filters_are_checked():
    assert Filters().safesearch == "moderate"
    assert Filters.from_dict({"size": "", "type_image": "photo"}) == Filters(type_image="photo")
    with pytest.raises(DragonError, match="safesearch"):
        Filters(safesearch="maybe")
    with pytest.raises(DragonError, match="unknown search filter"):
        Filters.from_dict({"colour": "red"})


# --------------------------------------------------------------------------- DuckDuckGo error mapping


class FakeDDGS:
    """Stands in for ddgs.DDGS: replays a script of answers (lists) and ddgs exceptions."""

    script: list = []
    calls: list = []

    def __init__(self, proxy=None, timeout=None):
        assert timeout is not None  # every call to the engine has a timeout

    def images(self, query, **kw):
        FakeDDGS.calls.append((query, kw))
        step = FakeDDGS.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture
def fake_ddgs(monkeypatch):
    FakeDDGS.calls = []
    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    return FakeDDGS


def engine(sleeps):
    return DuckDuckGo(timeout=3, min_interval=0, backoff=1, retries=2, sleep=sleeps.append)


def raw(n, start=0):
    return [{"title": f"t{i}", "image": f"https://img.example/{i}.jpg", "thumbnail": "", "url": f"https://p.example/{i}",
             "height": 480, "width": "640", "source": "Bing"} for i in range(start, start + n)]


def test_results_map_fields_and_pass_filters(fake_ddgs):
    fake_ddgs.script = [raw(3), []]
    out = engine([]).images("drogon", max_results=10, filters=Filters(license_image="Public", size="Large"))
    assert out[0] == SearchResult("https://img.example/0.jpg", "https://p.example/0", "t0", 640, 480, "duckduckgo")
    kw = fake_ddgs.calls[0][1]
    assert kw["safesearch"] == "moderate" and kw["backend"] == "duckduckgo"
    assert kw["license_image"] == "Public" and kw["size"] == "Large" and "layout" not in kw


def test_pages_until_enough(fake_ddgs):
    fake_ddgs.script = [raw(100), raw(100, 100), raw(100, 200)]
    out = engine([]).images("q", max_results=150, filters=Filters())
    assert len(out) == 150 and [c[1]["page"] for c in fake_ddgs.calls] == [1, 2]


def test_rate_limit_backs_off_then_gives_a_clear_message(fake_ddgs):
    fake_ddgs.script = [RatelimitException("202 Ratelimit")] * 3
    sleeps = []
    t = time.monotonic()
    with pytest.raises(DragonError, match="rate limit.*10-15 minutes.*cached"):
        engine(sleeps).images("q", max_results=10, filters=Filters())
    assert sleeps == [1, 2] and len(fake_ddgs.calls) == 3 and time.monotonic() - t < 1


def test_rate_limit_then_success(fake_ddgs):
    fake_ddgs.script = [DDGSException("https://duckduckgo.com/i.js 403 Forbidden"), raw(2), []]
    sleeps = []
    assert len(engine(sleeps).images("q", max_results=10, filters=Filters())) == 2 and sleeps == [1]


def test_timeout_and_no_network_messages(fake_ddgs):
    fake_ddgs.script = [TimeoutException("timed out")] * 3
    with pytest.raises(DragonError, match="did not answer within 3 s"):
        engine([]).images("q", max_results=10, filters=Filters())
    fake_ddgs.script = [DDGSException("error sending request: dns error")] * 3
    with pytest.raises(DragonError, match="connected to the internet"):
        engine([]).images("q", max_results=10, filters=Filters())


def test_no_results_is_an_empty_list_not_an_error(fake_ddgs):
    fake_ddgs.script = [DDGSException("No results found.")]
    assert engine([]).images("q", max_results=10, filters=Filters()) == []


def test_queries_are_spaced_out(fake_ddgs):
    fake_ddgs.script = [raw(1), [], raw(1, 5), []]
    sleeps = []
    e = DuckDuckGo(min_interval=5, sleep=sleeps.append)
    DuckDuckGo.reset_pace()
    e.images("a", max_results=10, filters=Filters())
    e.images("b", max_results=10, filters=Filters())
    assert len(sleeps) == 3 and all(0 < s <= 5 for s in sleeps)


def test_a_refused_later_query_keeps_earlier_results_and_stops_searching():
    class Refusing(FakeEngine):
        def images(self, query, *, max_results, filters):
            if self.calls:
                self.calls.append((query, max_results, filters))
                raise DragonError("DuckDuckGo is refusing searches from this machine for now (rate limit)")
            return super().images(query, max_results=max_results, filters=filters)

    e = Refusing(per_query=3)
    out = search_images(["a", "b", "c"], 10, engine=e)
    assert len(out.results) == 3 and len(e.calls) == 2 and "rate limit" in out.errors[0]
    locked_out = Refusing()
    locked_out.calls.append("an earlier search")
    with pytest.raises(DragonError, match="rate limit"):
        search_images(["d"], 10, engine=locked_out)  # refused before any result: the collection cannot start


def test_a_failed_connection_is_said_in_words_not_in_raw_text(fake_ddgs):
    raw_dns = ("https://duckduckgo.com/?q=Drogon: error sending request for url (https://duckduckgo.com/): client "
               "error (Connect): dns error: failed to lookup address information: Temporary failure in name resolution")
    fake_ddgs.script = [DDGSException(raw_dns)] * 3
    with pytest.raises(DragonError) as e:
        engine([]).images("Drogon", max_results=10, filters=Filters())
    message = str(e.value)
    assert "could not look up the search engine's address" in message and "connected to the internet" in message
    assert "lookup address information" not in message and "Connect" not in message and "https://" not in message
