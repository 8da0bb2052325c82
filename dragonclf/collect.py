"""Collect: images for a class from web search (or a URL list) into the store.

search (cached) -> download (concurrent, checked) -> store.ingest (normalise,
dedup, provenance), with progress, a clean stop, and resume:

- every URL that reaches a final answer is recorded with `store.mark_url`, so
  a rerun skips it and, thanks to the search cache, does not search again;
- only complete bodies are handed to the store, which writes a temp file and
  renames it, so an interrupted run (Stop, Ctrl-C, kill -9) leaves no partial
  files and no rows for unfinished images;
- failures that may pass (timeouts, resets, 5xx) are not recorded, so a rerun
  tries those URLs again.

Downloads run on the fetcher's threads; decoding and normalising run on a few
ingest threads (Pillow releases the GIL); this thread only schedules, counts
and reports, so progress and `on_item` callbacks all come from the caller's thread.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

from dragonclf.config import IngestConfig
from dragonclf.download import FetchConfig, Fetcher, FetchResult, normalise_url
from dragonclf.errors import DragonError, Refused
from dragonclf.names import NameClash
from dragonclf.search import Filters, SearchEngine, SearchResult, query_variations, search_images
from dragonclf.store import Tally

# Refusals that may not happen next time: not recorded, so a rerun tries again.
RETRYABLE = {"timeout", "deadline", "connection-reset", "connect-failed", "dns-timeout", "dns-failed",
             "truncated", "cancelled", "http-408", "http-429"}

Progress = Callable[[float, str], None]


@dataclass
class CollectItem:
    """What became of one URL (for the UI's gallery and refusal table)."""

    url: str
    outcome: str  # added | duplicate | conflict | refused | skipped | unfinished
    reason: str | None = None  # refusal slug, or "same-url" / "seen-before"
    detail: str | None = None
    image_id: str | None = None
    path: str | None = None  # the stored JPEG, for added / duplicate / conflict
    query: str | None = None
    page_url: str | None = None
    title: str | None = None
    seconds: float = 0.0


@dataclass
class CollectReport(Tally):
    """One class's collect: the tally (`added` is what the CLI and the UI call "stored"), and more."""

    label: str
    skipped: int = 0  # finished in an earlier run: not fetched again
    unfinished: int = 0  # stopped before they finished: a rerun fetches them
    cancelled: bool = False
    seconds: float = 0.0
    searched: list[str] = field(default_factory=list)  # queries sent to the engine
    cached: list[str] = field(default_factory=list)  # queries answered from the cache
    notes: list[str] = field(default_factory=list)  # e.g. a search given up after others had results
    items: list[CollectItem] = field(default_factory=list)
    error: str | None = None  # collect_classes: why this class stopped (a search that failed); the next goes on

    @property
    def stored(self) -> int:
        """The pictures stored: the tally's `added`, in the word the CLI and the Collect tab use."""
        return self.added

    def as_dict(self, items: bool = False) -> dict:
        """The CLI's --json shape (plus `skipped`, `unfinished`, `cancelled`, `notes`).

        The issue's five keys are always there with fixed types: stored, duplicates and
        conflicts ints, refused {reason: int}, seconds a float.
        """
        d = {"stored": int(self.added), "duplicates": int(self.duplicates), "conflicts": int(self.conflicts),
             "refused": {str(k): int(v) for k, v in sorted(self.refused.items())},
             "seconds": round(float(self.seconds), 2),
             "skipped": self.skipped, "unfinished": self.unfinished, "cancelled": self.cancelled,
             "notes": list(self.notes), "error": self.error}
        if items:
            d["items"] = [asdict(i) for i in self.items]
        return d


def combine(reports: list[CollectReport]) -> dict:
    """One summary over several classes (the UI's refusal table)."""
    total = {"stored": 0, "duplicates": 0, "conflicts": 0, "refused": Counter(), "seconds": 0.0,
             "skipped": 0, "unfinished": 0, "cancelled": False, "notes": [], "errors": []}
    for r in reports:
        d = r.as_dict()
        for k in ("stored", "duplicates", "conflicts", "skipped", "unfinished", "seconds"):
            total[k] += d[k]
        total["refused"].update(d["refused"])
        total["cancelled"] |= d["cancelled"]
        total["notes"] += [f"{r.label}: {n}" for n in d["notes"]]
        total["errors"] += [f"{r.label}: {r.error}"] if r.error else []
    total["refused"] = dict(sorted(total["refused"].items()))
    total["seconds"] = round(total["seconds"], 2)
    return total


@dataclass
class _Candidate:
    url: str  # normalised: the key for dedup and resume
    meta: SearchResult | None


MAX_PER_CLASS = 2000  # one request cannot ask for an unbounded search-and-download


def collect(store, label: str, *, query: str | None = None, queries: list[str] | None = None,
            urls: list[str] | None = None, max_images: int | None = 100, filters: Filters | dict | None = None,
            engine: SearchEngine | None = None, progress: Progress | None = None,
            cancel: threading.Event | None = None, on_item: Callable[[CollectItem], None] | None = None,
            cfg: FetchConfig = FetchConfig(), ingest_cfg: IngestConfig = IngestConfig(),
            ingest_workers: int | None = None) -> CollectReport:
    """Store up to `max_images` images of `label` from these candidates, counting any an earlier run stored.

    So a rerun after a stop tops the class up to `max_images`, no further. Candidates come from a search (`query`, or `queries` to run exactly those; default: the
    label and its variations) or from `urls` (then `max_images=None` takes them
    all). An unknown label is created, and removed again if the run stores nothing in
    it (a search that failed, every picture refused): no empty label is left behind.
    Raises DragonError only for what stops the whole collection (search refused,
    bad filters); every per-image failure is counted in the report.
    """
    start = time.monotonic()
    cancel = cancel or threading.Event()
    progress = progress or (lambda f, m: None)
    filters = filters if isinstance(filters, Filters) else Filters.from_dict(filters)
    if max_images is not None and not 1 <= max_images <= MAX_PER_CLASS:
        raise DragonError(f"the number of images to collect per class must be between 1 and {MAX_PER_CLASS:,}")
    try:
        display, made = store.label(label).display, False
    except NameClash:
        raise  # "cat" when "Cat" exists: said, never merged
    except DragonError:
        display, made = store.add_label(label).display, True
    try:
        return _collect(store, display, query, queries, urls, max_images, filters, engine, progress, cancel, on_item,
                        cfg, ingest_cfg, ingest_workers, start)
    finally:
        if made:
            store.forget_label_if_empty(display)


def _collect(store, display, query, queries, urls, max_images, filters, engine, progress, cancel, on_item, cfg,
             ingest_cfg, ingest_workers, start) -> CollectReport:
    report = CollectReport(label=display)

    def finish(item: CollectItem) -> None:
        report.items.append(item)
        if on_item:
            on_item(item)

    if urls is not None:
        raw = [(u, None) for u in urls if u.strip() and not u.lstrip().startswith("#")]
    else:
        qs = queries or query_variations(display, query)
        want = max_images or 100
        # Headroom: on the open web a good share of results are dead links or not images.
        outcome = search_images(qs, max_results=math.ceil(want * 1.5) + 10, filters=filters, engine=engine,
                                progress=lambda f, m: progress(0.05 * f, m))
        report.searched, report.cached, report.notes = outcome.searched, outcome.cached, list(outcome.errors)
        raw = [(r.image_url, r) for r in outcome.results]

    candidates = _candidates(raw, report, finish)
    store.record_stored_urls()  # an image stored by a run killed before it recorded its URL is finished too
    done_before = store.url_outcomes()
    todo = []
    already_stored = 0
    for c in candidates:
        if c.url in done_before:
            outcome_before, _reason = done_before[c.url]
            already_stored += outcome_before == "added"
            report.skipped += 1
            finish(CollectItem(c.url, "skipped", "seen-before", f"finished in an earlier run ({outcome_before})",
                               **_meta(c)))
        else:
            todo.append(c)
    target = len(todo) if max_images is None else max(0, max_images - already_stored)
    if target == 0 or not todo:
        progress(1.0, f"{display}: nothing left to collect ({already_stored} stored earlier)")
        report.seconds = time.monotonic() - start
        return report

    _run(store, display, todo, target, report, finish, filters, progress, cancel, cfg, ingest_cfg,
         ingest_workers or min(4, os.cpu_count() or 1))
    report.seconds = time.monotonic() - start
    return report


def _candidates(raw, report: CollectReport, finish) -> list[_Candidate]:
    """Normalise URLs; bad ones are refused, repeats flagged (the same URL is fetched once)."""
    seen, out = set(), []
    for url, meta in raw:
        try:
            key = normalise_url(url)
        except Refused as r:
            report.tally("refused", r.reason)
            finish(CollectItem(url.strip(), "refused", r.reason, r.detail, **_meta_of(meta)))
            continue
        if key in seen:
            report.tally("duplicate")
            finish(CollectItem(key, "duplicate", "same-url", "the same URL appears twice", **_meta_of(meta)))
            continue
        seen.add(key)
        out.append(_Candidate(key, meta))
    return out


def _meta_of(meta: SearchResult | None) -> dict:
    if meta is None:
        return {}
    return {"query": meta.query or None, "page_url": meta.page_url, "title": meta.title}


def _meta(c: _Candidate) -> dict:
    return _meta_of(c.meta)


def _run(store, label, todo, target, report, finish, filters, progress, cancel, cfg, ingest_cfg, ingest_workers):
    stop = threading.Event()  # ours: set on cancel, Ctrl-C or any early exit, so sockets close at once
    fetcher = Fetcher(cfg, cancel=stop)
    ingester = ThreadPoolExecutor(max_workers=ingest_workers, thread_name_prefix="dragonclf-ingest")
    fetching: dict[Future, _Candidate] = {}
    ingesting: dict[Future, tuple[_Candidate, FetchResult]] = {}
    spare: list[tuple[_Candidate, FetchResult]] = []
    queue = iter(todo)
    exhausted = False
    done = 0

    def say():
        refused = sum(report.refused.values())
        frac = max(done / len(todo), report.added / target) if target else 1.0
        progress(0.05 + 0.95 * min(1.0, frac),
                 f"{label}: {done}/{len(todo)} done, {report.added} stored, {refused} refused")

    def ingest(c: _Candidate, result: FetchResult) -> None:
        prov = _provenance(c, result, filters)
        ingesting[ingester.submit(store.ingest, result.data, label, prov, ingest_cfg)] = (c, result)

    try:
        while True:
            if cancel.is_set() and not stop.is_set():
                stop.set()
                report.cancelled = True
            # Never more ingests running than images still wanted, so we store exactly `target`;
            # bodies fetched beyond that wait as spares in case an ingest is refused or a duplicate.
            while spare and not stop.is_set() and report.added + len(ingesting) < target:
                ingest(*spare.pop(0))
            # Fetch a little ahead of what is still wanted (some will be refused), not a whole pool.
            wanted = max(1, math.ceil((target - report.added) * 1.25))
            room = min(cfg.workers, wanted) - len(fetching) - len(ingesting) - len(spare)
            while room > 0 and not exhausted and not stop.is_set() and report.added < target:
                c = next(queue, None)
                if c is None:
                    exhausted = True
                    break
                fetching[fetcher.submit(c.url)] = c
                room -= 1
            if not fetching and not ingesting:
                break
            finished, _ = wait([*fetching, *ingesting], timeout=0.25, return_when=FIRST_COMPLETED)
            for fut in finished:
                if fut in fetching:
                    c = fetching.pop(fut)
                    result: FetchResult = fut.result()
                    if not result.ok or stop.is_set():
                        done += 1
                        _record_fetch_failure(store, c, result, report, finish)
                    elif report.added + len(ingesting) < target:
                        ingest(c, result)
                    else:
                        spare.append((c, result))
                else:
                    c, result = ingesting.pop(fut)
                    done += 1
                    _record_ingest(store, c, result, fut.result(), report, finish)
                say()
    finally:
        stop.set()  # after Ctrl-C or an error too: close sockets now; finished ingests are already safe on disk
        fetcher.close()
        ingester.shutdown(wait=True, cancel_futures=True)
    if report.cancelled:
        # never started, or fetched but not stored: the next run fetches them
        report.unfinished += sum(1 for _ in queue) + len(spare)
    # Spares left once the target is met are simply not needed: unrecorded, a later run may use them.
    progress(1.0, f"{label}: {report.added} stored, {report.duplicates} duplicates, "
                  f"{report.conflicts} conflicts, {sum(report.refused.values())} refused")


def _provenance(c: _Candidate, result: FetchResult, filters: Filters) -> dict:
    m = c.meta
    return {"origin": "url", "source": c.url, "image_url": result.final_url or c.url,
            "query": m.query if m else None, "engine": m.engine if m else None,
            "page_url": m.page_url if m else None, "title": m.title if m else None,
            "license": filters.license_image if m else None}


def _record_fetch_failure(store, c, result: FetchResult, report, finish) -> None:
    if result.ok or result.reason == "cancelled":
        # fetched after a stop, or cut short by it: left for the next run, not a failure
        report.unfinished += 1
        finish(CollectItem(c.url, "unfinished", "cancelled", "stopped before this image finished",
                           seconds=result.seconds, **_meta(c)))
        return
    report.tally("refused", result.reason)
    if result.reason not in RETRYABLE and not result.reason.startswith("http-5"):
        store.mark_url(c.url, "refused", result.reason)
    finish(CollectItem(c.url, "refused", result.reason, result.detail, seconds=result.seconds, **_meta(c)))


def _record_ingest(store, c, fetched: FetchResult, res, report, finish) -> None:
    item = CollectItem(c.url, res.outcome, res.reason, res.detail, res.image_id,
                       seconds=fetched.seconds, **_meta(c))
    report.tally(res.outcome if res.outcome in ("added", "duplicate", "conflict") else "refused", res.reason)
    item.path = str(res.path) if res.path else None
    store.mark_url(c.url, res.outcome, res.reason)
    finish(item)


def collect_classes(store, classes: list[tuple[str, str | list[str] | None]], per_class: int = 100, *,
                    filters: Filters | dict | None = None, engine: SearchEngine | None = None,
                    progress: Progress | None = None, cancel: threading.Event | None = None,
                    on_item: Callable[[str, CollectItem], None] | None = None,
                    cfg: FetchConfig = FetchConfig()) -> list[CollectReport]:
    """Collect several classes one after the other: [(label, query), ...].

    A query is None (the label and its variations), one string (it plus the
    variations) or a list (exactly those queries, as a person edited them).
    A class whose search fails gets its report's `error` (a sentence) and the next
    class goes on; what applies to every class (no classes, bad filters or numbers)
    raises DragonError before anything runs.
    """
    classes = [(lab.strip(), q) for lab, q in classes if lab and lab.strip()]
    if not classes:
        raise DragonError("type at least one class name")
    for lab, q in classes:
        if isinstance(q, list) and not [x for x in q if x.strip()]:
            raise DragonError(f"no search queries for {lab}: give at least one, or leave the class out")
    filters = filters if isinstance(filters, Filters) else Filters.from_dict(filters)
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise DragonError(f"the number of images to collect per class must be between 1 and {MAX_PER_CLASS:,}")
    cancel = cancel or threading.Event()
    reports = []
    for i, (lab, q) in enumerate(classes):
        if cancel.is_set():
            break

        def scaled(f, m, _i=i):
            if progress:
                progress((_i + f) / len(classes), m)

        item_cb = (lambda item, _lab=lab: on_item(_lab, item)) if on_item else None
        exact = [x.strip() for x in q if x.strip()] if isinstance(q, list) else None
        single = None if exact is not None else ((q or "").strip() or None)
        try:
            reports.append(collect(store, lab, query=single, queries=exact, max_images=per_class, filters=filters,
                                   engine=engine, progress=scaled, cancel=cancel, on_item=item_cb, cfg=cfg))
        except DragonError as e:  # this class only: say why, go on with the next
            reports.append(CollectReport(label=lab, error=str(e)))
            scaled(1.0, f"{lab}: {e}")
    return reports
