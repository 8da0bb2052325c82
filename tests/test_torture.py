"""Torture: three processes on one dataset (one with three threads, as the app's handlers; one single-threaded,
as a script; one running real `python -m dragonclf` commands) import, collect from a loopback image host,
relabel, trash, restore, undo, redo, rescan, empty the trash and publish model folders, while a driver
SIGKILLs one of them (with the CLI command it runs) at random moments, at least 100 times; then the invariants."""

from __future__ import annotations

from httpserver import LoopbackServer
from torture_driver import prepare, run


def test_random_kills_of_concurrent_writers_lose_nothing_and_leave_no_debris(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    with LoopbackServer() as server:
        urls = prepare(home, work, n_images=240, server=server)
        out = run(home, work, seconds=60, min_kills=100, urls=urls)
    print(f"torture: {out.kills} kills in {out.seconds:.0f} s, {out.counts}")
    assert out.kills >= 100
    assert out.worker_failures == []
    assert out.violations == [], out.violations[:20]
    assert out.counts["active"] > 0 and out.counts["reported_stored"] > 0
