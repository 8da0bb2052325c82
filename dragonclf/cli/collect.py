"""CLI for collecting images for one label.

    collect --dataset NAME --label L (--query Q | --queries "Q1 | Q2" | --urls FILE) [--max N] [--json]

`--query Q` searches Q plus a few variations of the label ("<label> photo",
"<label> close up"); `--queries` searches exactly the queries given, the same
`a | b | c` format the Collect tab's Queries box uses.

The dataset is created when missing (collecting is how most datasets start),
and so is the label. Progress goes to stderr, the result to stdout. Ctrl-C
stops cleanly; running the same command again continues where it stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dragonclf.cli import add_json_flag, emit
from dragonclf.errors import DragonError


def register(sub) -> None:
    p = sub.add_parser("collect", help="download images for a label from web image search or a URL list")
    p.add_argument("--dataset", required=True, help="dataset name (created if missing)")
    p.add_argument("--label", required=True, help="the class these images show (created if missing)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--query", help="what to search for; '<label> photo' and '<label> close up' are searched too")
    src.add_argument("--queries", metavar="'Q1 | Q2 | ...'",
                     help="exactly these searches, separated by '|' (no variations added)")
    src.add_argument("--urls", metavar="FILE", help="a text file with one image URL per line ('-' for stdin)")
    p.add_argument("--max", type=int, default=None, help="images to store (default: 100 for a search, all URLs for --urls)")
    p.add_argument("--safesearch", default="moderate", choices=("on", "moderate", "off"))
    p.add_argument("--license", dest="license_image", default=None, help="license filter, e.g. Public, Share, Modify")
    p.add_argument("--size", default=None, help="Small, Medium, Large or Wallpaper")
    p.add_argument("--type", dest="type_image", default=None, help="photo, clipart, gif, transparent, line")
    p.add_argument("--layout", default=None, help="Square, Tall or Wide")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_flag(p)
    p.set_defaults(func=cmd_collect)


def _read_urls(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DragonError(f"cannot read the URL list {path}: {e}") from None


def _progress(quiet: bool):
    if quiet:
        return None
    last = {"msg": ""}

    def report(fraction: float, message: str) -> None:
        if message != last["msg"]:
            last["msg"] = message
            print(f"\r[{fraction * 100:5.1f}%] {message[:100]:<100}", end="", file=sys.stderr, flush=True)

    return report


def cmd_collect(a) -> int:
    from dragonclf.collect import collect
    from dragonclf.registry import delete_dataset_files
    from dragonclf.search import split_queries
    from dragonclf.store import Store, list_datasets

    filters = {"safesearch": a.safesearch, "license_image": a.license_image, "size": a.size,
               "type_image": a.type_image, "layout": a.layout}
    queries = None
    if a.queries is not None:  # checked before the dataset is created: a typo leaves nothing behind
        queries = split_queries(a.queries)
        if not queries:
            raise DragonError("--queries needs at least one search, e.g. --queries 'red fox | fox in snow'")
    urls = _read_urls(a.urls) if a.urls else None
    fresh = a.dataset not in list_datasets()
    store = Store.open(a.dataset, create=True)
    max_images = a.max if a.max is not None else (None if urls is not None else 100)
    try:
        report = collect(store, a.label, query=a.query, queries=queries, urls=urls, max_images=max_images,
                         filters=filters, progress=_progress(a.quiet or a.json))
    except DragonError:
        if fresh and not store.labels() and not store.images(status=None):
            delete_dataset_files(store.name)  # made by this command, and nothing came: leave nothing behind
        if not (a.quiet or a.json):
            print(file=sys.stderr)  # the error goes below the progress line
        raise
    if not (a.quiet or a.json):
        print(file=sys.stderr)
    emit(report.as_dict(), a.json, lambda r: _summary(report))
    return 0


def _summary(report) -> str:
    refused = ", ".join(f"{n} {reason}" for reason, n in report.refused.most_common()) or "none"
    lines = [f"{report.label}: stored {report.added}, duplicates {report.duplicates}, "
             f"conflicts {report.conflicts}, skipped (earlier run) {report.skipped} in {report.seconds:.1f} s",
             f"refused: {refused}"]
    if report.cached:
        lines.append(f"searches answered from the cache: {', '.join(report.cached)}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
