"""Soak: the torture test (tests/test_torture.py) for much longer, with its figures.

    .venv/bin/python bench/soak.py --minutes 30            # the issue's soak
    .venv/bin/python bench/soak.py --minutes 10 --gap 0.5 1.5

Three worker processes (one with three threads, as the app's handlers; two single-threaded, as CLI
commands) import, collect from a loopback image host, relabel, trash, restore, undo, redo, rescan,
empty the trash and publish model folders on one dataset; a driver SIGKILLs one at random every
`--gap` seconds and restarts it. At the end it checks the same invariants as the test and prints
one JSON line: minutes actually run, kills, rows, pictures reported stored, models, violations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]

from httpserver import LoopbackServer  # noqa: E402
from torture_driver import prepare, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--gap", type=float, nargs=2, default=(0.3, 2.0), help="seconds between kills (min max)")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dragonclf-soak-") as d:
        home, work = Path(d) / "home", Path(d) / "work"
        home.mkdir()
        with LoopbackServer() as server:
            urls = prepare(home, work, n_images=a.images, server=server)
            out = run(home, work, seconds=a.minutes * 60, min_kills=0, seed=a.seed, kill_gap=tuple(a.gap), urls=urls)
    print(json.dumps({"minutes": round(out.seconds / 60, 1), "kills": out.kills, **out.counts,
                      "worker_failures": len(out.worker_failures), "violations": len(out.violations),
                      "first_violations": out.violations[:10]}))
    sys.exit(1 if out.violations or out.worker_failures else 0)


if __name__ == "__main__":
    main()
