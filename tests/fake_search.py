"""The one fake in the suite: a search engine whose results point at a loopback server.

The app picks it up through `DRAGONCLF_SEARCH_ENGINE=fake_search:engine`; a test
calls `configure(server, {label: [paths]})` first. A query matches a label when
it starts with the label's name (so "cat photo" finds the "cat" images).
"""

from __future__ import annotations

from dragonclf.search import SearchResult

_STATE = {"server": None, "paths": {}, "calls": []}


class FakeEngine:
    name = "fake"

    def images(self, query, *, max_results, filters):
        _STATE["calls"].append(query)
        server = _STATE["server"]
        for label, paths in _STATE["paths"].items():
            if query.lower().startswith(label.lower()):
                return [SearchResult(server.url(p), f"https://pages.example/{label}/{i}", f"{label} {i}", None, None,
                                     self.name) for i, p in enumerate(paths[:max_results])]
        return []


def configure(server, paths_by_label: dict[str, list[str]]) -> list[str]:
    _STATE.update(server=server, paths=paths_by_label, calls=[])
    return _STATE["calls"]


def engine() -> FakeEngine:
    return FakeEngine()
