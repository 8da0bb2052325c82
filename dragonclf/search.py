"""Image search behind a small interface, with a polite DuckDuckGo engine and a disk cache.

An engine is anything with a `name` and an `images(query, max_results=, filters=)`
method returning `SearchResult`s; tests pass a fake one that points at a
loopback server. `search_images` runs several queries per class, reads and
writes the cache under `cache_root()/search/`, and merges results without
repeats. DuckDuckGo locks out clients that search quickly, so the engine waits
between queries, backs off (bounded) when it is refused, and turns every
failure into a DragonError a person can act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from dragonclf import config
from dragonclf.errors import DragonError

# What a person can choose; the values are DuckDuckGo's (ddgs passes them through).
SAFESEARCH = ("on", "moderate", "off")
SIZES = (None, "Small", "Medium", "Large", "Wallpaper")
TYPES = (None, "photo", "clipart", "gif", "transparent", "line")
LAYOUTS = (None, "Square", "Tall", "Wide")
LICENSES = (None, "any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially")

log = logging.getLogger(__name__)

CACHE_TTL = 14 * 24 * 3600  # seconds a cached search stays good: results drift, slowly
EMPTY_TTL = 15 * 60  # an empty answer may be a quiet lock-out: trust it only as long as one lasts


@dataclass(frozen=True)
class Filters:
    safesearch: str = "moderate"
    size: str | None = None
    type_image: str | None = None
    layout: str | None = None
    license_image: str | None = None
    region: str = "us-en"

    def __post_init__(self):
        for value, allowed, what in [(self.safesearch, SAFESEARCH, "safesearch"), (self.size, SIZES, "size"),
                                     (self.type_image, TYPES, "type"), (self.layout, LAYOUTS, "layout"),
                                     (self.license_image, LICENSES, "license")]:
            if value not in allowed:
                choices = ", ".join(str(a) for a in allowed if a)
                raise DragonError(f"unknown {what} filter {value!r}; choose one of {choices}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Filters":
        d = {k: (v or None) for k, v in (d or {}).items()}
        d.setdefault("safesearch", "moderate")
        d["safesearch"] = d["safesearch"] or "moderate"
        d["region"] = d.get("region") or "us-en"
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DragonError(f"unknown search filter(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class SearchResult:
    image_url: str
    page_url: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    engine: str = ""
    query: str = ""  # filled by search_images: which query found it


class SearchEngine(Protocol):
    name: str

    def images(self, query: str, *, max_results: int, filters: Filters) -> list[SearchResult]: ...


def query_variations(label: str, query: str | None = None) -> list[str]:
    """The queries run for one class: the user's own first, then a few that add variety.

    Different phrasings surface different images, so a class reaches a few
    hundred pictures without paging deep into one result list (which is where
    DuckDuckGo starts refusing). The Collect tab suggests these and lets people edit them;
    `collect --queries` takes an exact list instead.
    """
    base = (query or label).strip()
    out = [base, f"{label} photo", f"{label} close up"]
    seen, unique = set(), []
    for q in out:
        if q and q.lower() not in seen:
            seen.add(q.lower())
            unique.append(q)
    return unique


def engine_from_env() -> SearchEngine | None:
    """`DRAGONCLF_SEARCH_ENGINE=module:factory` picks another engine (tests, other engines); unset: DuckDuckGo."""
    spec = os.environ.get("DRAGONCLF_SEARCH_ENGINE")
    if not spec:
        return None
    import importlib

    module, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr or "engine")
    except (ImportError, AttributeError) as e:
        raise DragonError(f"DRAGONCLF_SEARCH_ENGINE={spec!r} names no engine I can load ({e})") from None
    return factory() if callable(factory) else factory


def split_queries(text: str) -> list[str]:
    """'query 1 | query 2 | ...' -> the queries, stripped, without blanks or repeats (case-insensitive).

    The one format the Collect tab and `collect --queries` share for a list a person typed.
    """
    seen, out = set(), []
    for q in (text or "").split("|"):
        q = " ".join(q.split())
        if q and q.lower() not in seen:
            seen.add(q.lower())
            out.append(q)
    return out


# What a failed connection's text says, in words a person can act on (the raw text goes to the log).
_CAUSES = (
    (("name resolution", "name or service not known", "nodename nor servname", "getaddrinfo", "dns",
      "failed to lookup address", "no address associated"),
     "this machine could not look up the search engine's address (no internet connection, or DNS is blocked)"),
    (("network is unreachable", "no route to host"), "the network is unreachable from this machine"),
    (("connection refused",), "the connection was refused"),
    (("certificate", "ssl", "tls"), "a secure connection could not be made (a proxy or firewall may be in the way)"),
    (("timed out", "timeout"), "the connection timed out"),
    (("proxy",), "the proxy refused the connection"),
)


def unreachable(engine: str, query: str, error: BaseException) -> str:
    """A sentence for a search that could not reach its engine; the exception's own text is only logged."""
    text = f"{type(error).__name__}: {error}".lower()
    cause = next((why for keys, why in _CAUSES if any(k in text for k in keys)), "the connection failed")
    log.warning("search %r on %s failed: %s: %s", query, engine, type(error).__name__, error)
    return (f"Could not search {engine} for {query!r}: {cause}. Is this machine connected to the internet? "
            "Try again when it is; pictures already stored are kept.")


# --------------------------------------------------------------------------- DuckDuckGo


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class DuckDuckGo:
    """DuckDuckGo images through `ddgs`, with pauses between queries and bounded back-off."""

    name = "duckduckgo"
    _last_query = 0.0  # shared by all instances: the lock-out is per machine, not per object
    _pace_lock = threading.Lock()

    def __init__(self, timeout: float = 10, min_interval: float = 2.0, retries: int = 2,
                 backoff: float = 4.0, proxy: str | None = None, sleep: Callable[[float], None] = time.sleep):
        self.timeout = timeout  # seconds per request to the engine
        self.min_interval = min_interval  # seconds between two queries
        self.retries = retries  # extra tries after a rate limit or timeout
        self.backoff = backoff  # first wait after a refusal; doubles; total stays under ~30 s
        self.proxy = proxy
        self._sleep = sleep

    def images(self, query: str, *, max_results: int, filters: Filters) -> list[SearchResult]:
        results: list[SearchResult] = []
        seen: set[str] = set()
        page = 1
        while len(results) < max_results:
            batch = self._page(query, page, max_results, filters)
            fresh = [r for r in batch if r.image_url not in seen]
            if not fresh:
                break  # the engine has nothing more for this query
            seen.update(r.image_url for r in fresh)
            results.extend(fresh)
            page += 1
            if page > 10:  # deep pages are where lock-outs start; more queries beat more pages
                break
        return results[:max_results]

    @classmethod
    def reset_pace(cls) -> None:
        """Forget when the last query went out: the next one goes at once."""
        with cls._pace_lock:
            DuckDuckGo._last_query = 0.0

    def _pace(self):
        with DuckDuckGo._pace_lock:
            wait = DuckDuckGo._last_query + self.min_interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            DuckDuckGo._last_query = time.monotonic()

    def _page(self, query: str, page: int, max_results: int, filters: Filters) -> list[SearchResult]:
        import ddgs  # imported here: importing dragonclf must not pull the search stack
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        kwargs = dict(region=filters.region, safesearch=filters.safesearch, size=filters.size,
                      type_image=filters.type_image, layout=filters.layout, license_image=filters.license_image,
                      max_results=max(max_results, 100), page=page, backend="duckduckgo")
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        wait = self.backoff
        for attempt in range(self.retries + 1):
            self._pace()
            last = attempt == self.retries
            try:
                raw = ddgs.DDGS(proxy=self.proxy, timeout=self.timeout).images(query, **kwargs)
                return [self._result(r) for r in raw if r.get("image")]
            except RatelimitException as e:
                problem = "rate"
                error = e
            except TimeoutException as e:
                problem = "timeout"
                error = e
            except DDGSException as e:
                text = str(e)
                if "No results found" in text:
                    return []  # an honest empty answer (or a quiet lock-out: search_images says so)
                problem = "rate" if any(s in text for s in ("202", "403", "Ratelimit", "ratelimit")) else "network"
                error = e
            if last:
                break
            self._sleep(wait)
            wait *= 2
        if problem == "rate":
            raise DragonError(
                f"DuckDuckGo is refusing searches from this machine for now (rate limit) while searching {query!r}. "
                "Wait 10-15 minutes and try again; results already found are cached and will not be searched again."
            ) from error
        if problem == "timeout":
            raise DragonError(
                f"DuckDuckGo did not answer within {self.timeout:g} s while searching {query!r}. "
                "The network may be slow or down; try again later."
            ) from error
        raise DragonError(unreachable("DuckDuckGo", query, error)) from error

    def _result(self, r: dict) -> SearchResult:
        return SearchResult(image_url=r["image"], page_url=r.get("url"), title=r.get("title"),
                            width=_int(r.get("width")), height=_int(r.get("height")), engine=self.name)


# --------------------------------------------------------------------------- cache


def _cache_path(engine: str, query: str, filters: Filters):
    key = json.dumps({"engine": engine, "query": query.strip().lower(), "filters": asdict(filters)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return config.cache_root() / "search" / engine / f"{digest}.json"


def _read_cache(engine: str, query: str, filters: Filters, max_results: int) -> list[SearchResult] | None:
    path = _cache_path(engine, query, filters)
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a damaged cache file is only a missed shortcut: search again and rewrite it
    results = [SearchResult(**r) for r in entry["results"]]
    if time.time() - entry.get("time", 0) > (CACHE_TTL if results else EMPTY_TTL):
        return None
    # A cached answer serves any request it could have fully answered.
    if entry["max_results"] >= max_results or len(results) < entry["max_results"]:
        return results[:max_results]
    return None


def _write_cache(engine: str, query: str, filters: Filters, max_results: int, results: list[SearchResult]) -> None:
    path = _cache_path(engine, query, filters)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"engine": engine, "query": query, "filters": asdict(filters), "max_results": max_results,
             "time": time.time(), "results": [asdict(r) for r in results]}
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(entry, ensure_ascii=False))
    os.replace(tmp, path)  # readers see the old entry or the new one, never half


@dataclass
class SearchOutcome:
    results: list[SearchResult]
    searched: list[str] = field(default_factory=list)  # queries that went to the engine
    cached: list[str] = field(default_factory=list)  # queries answered from the cache
    empty: list[str] = field(default_factory=list)  # queries with no results at all
    errors: list[str] = field(default_factory=list)  # why later queries were given up (results kept)


def search_images(queries: list[str], max_results: int, filters: Filters | dict | None = None,
                  engine: SearchEngine | None = None, use_cache: bool = True,
                  progress: Callable[[float, str], None] | None = None) -> SearchOutcome:
    """Run `queries` (cache first) until `max_results` distinct image URLs are found.

    Each query asks for `max_results` itself, so one dull query cannot starve
    the class; later queries are skipped once enough distinct images are in.
    """
    engine = engine or engine_from_env() or DuckDuckGo()
    filters = filters if isinstance(filters, Filters) else Filters.from_dict(filters)
    out = SearchOutcome(results=[])
    seen: set[str] = set()
    for i, q in enumerate(queries):
        if len(out.results) >= max_results:
            break
        if progress:
            progress(i / max(1, len(queries)), f"searching {engine.name} for {q!r}")
        found = _read_cache(engine.name, q, filters, max_results) if use_cache else None
        if found is not None:
            out.cached.append(q)
        else:
            try:
                try:
                    found = engine.images(q, max_results=max_results, filters=filters)
                except OSError as e:  # an engine that let a network error through (DNS, refused, reset)
                    raise DragonError(unreachable(engine.name, q, e)) from e
            except DragonError as e:
                if not out.results:
                    raise
                # Keep what earlier queries found; asking a refusing engine again only prolongs a lock-out.
                out.errors.append(str(e))
                break
            out.searched.append(q)
            _write_cache(engine.name, q, filters, max_results, found)
        if not found:
            out.empty.append(q)
        for r in found:
            if r.image_url not in seen:
                seen.add(r.image_url)
                out.results.append(SearchResult(**{**asdict(r), "query": q, "engine": r.engine or engine.name}))
    if not out.results and out.empty:
        raise DragonError(
            f"no images found for {', '.join(repr(q) for q in out.empty)}. Try other words; if every search "
            "says this, the engine may be limiting this machine: wait 10-15 minutes."
        )
    return out
