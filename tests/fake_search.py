"""The one fake in the suite: a search engine whose results point at a loopback server.

The app picks it up through `DRAGONCLF_SEARCH_ENGINE=fake_search:engine`; a test
calls `configure(server, {label: [paths]})` first. A query matches a label when
it starts with the label's name (so "cat photo" finds the "cat" images); the
longest matching name wins, so "c1" does not answer for "c10".

A CLI run is another process: `write_config(file, server, paths)` saves the
same setup as JSON and the test points `FAKE_SEARCH_CONFIG` at it; that
process then appends each query it is asked to `<file>.calls`, one per line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dragonclf.search import SearchResult

_STATE = {"base": None, "paths": {}, "calls": [], "calls_file": None}


class FakeEngine:
    name = "fake"

    def images(self, query, *, max_results, filters):
        _STATE["calls"].append(query)
        if _STATE["calls_file"]:
            with open(_STATE["calls_file"], "a", encoding="utf-8") as f:
                f.write(query + "\n")
        matches = [label for label in _STATE["paths"] if query.lower().startswith(label.lower())]
        if not matches:
            return []
        label = max(matches, key=len)
        return [SearchResult(_STATE["base"] + p, f"https://pages.example/{label}/{i}", f"{label} {i}", None, None,
                             self.name) for i, p in enumerate(_STATE["paths"][label][:max_results])]


def configure(server, paths_by_label: dict[str, list[str]]) -> list[str]:
    """Set up the fake for this process; returns the list every query is appended to."""
    _STATE.update(base=server.url(""), paths=paths_by_label, calls=[], calls_file=None)
    return _STATE["calls"]


def write_config(file: Path, server, paths_by_label: dict[str, list[str]]) -> Path:
    """Set up the fake for another process (export FAKE_SEARCH_CONFIG=file); returns its calls file."""
    calls = Path(str(file) + ".calls")
    Path(file).write_text(json.dumps({"base": server.url(""), "paths": paths_by_label, "calls_file": str(calls)}))
    return calls


def engine() -> FakeEngine:
    config = os.environ.get("FAKE_SEARCH_CONFIG")
    if config and _STATE["base"] is None:
        _STATE.update(json.loads(Path(config).read_text()))
    return FakeEngine()
