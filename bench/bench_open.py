"""Benchmark: opening a dataset of 100,000 pictures, clean and after a crash in an edit.

Builds (or reuses, `--home`) a dataset of `--n` pictures: 20 synthetic ones imported through the
store, the rest filled in as `bench_growth.py --fill` does (rows whose files are hard links of one
stored picture, real perceptual-hash bit patterns). Then, each a median of `--repeat` runs:

- `python -m dragonclf status` as a whole process after a clean close: wall time and CPU time
  (user + system of the child: what the other processes of a shared machine do not inflate);
- the first `status` after a process was killed in an edit (relabel committed, files not yet
  moved): that open runs the full check (every label folder listed) and finishes the moves;
- in-process: `Store.open` of the clean dataset, and `recover(full=True)` (what every open did before).

Run: .venv/bin/python bench/bench_open.py --n 100000 [--home DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench_growth import DATASET, LABELS, fill, picture  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def env(home: Path) -> dict:
    return {**os.environ, "DRAGONCLF_HOME": str(home), "PYTHONPATH": str(REPO)}


def status_once(home: Path) -> tuple[float, float]:
    t, c = time.perf_counter(), children_cpu()
    subprocess.run([sys.executable, "-m", "dragonclf", "status", "--dataset", DATASET], env=env(home), check=True,
                   capture_output=True)
    return time.perf_counter() - t, children_cpu() - c


def median_status(home: Path, repeat: int) -> dict:
    runs = [status_once(home) for _ in range(repeat)]
    return {"wall_s": statistics.median(w for w, _ in runs), "cpu_s": statistics.median(c for _, c in runs),
            "runs": [round(w, 3) for w, _ in runs]}


def killed_relabel(home: Path, ids: list[str], label: str) -> None:
    """A process that commits a relabel of `ids` and is killed before its first file moves."""
    code = textwrap.dedent(f"""
        import os
        from dragonclf.store import Store
        s = Store.open({DATASET!r})
        real = os.replace
        os.replace = lambda a, b: os._exit(9) if str(b).endswith(".jpg") else real(a, b)
        s.relabel({ids!r}, {label!r})
    """)
    r = subprocess.run([sys.executable, "-c", code], env=env(home), capture_output=True, text=True)
    assert r.returncode == 9, r.stderr


def build(home: Path, n: int) -> None:
    os.environ["DRAGONCLF_HOME"] = str(home)
    from dragonclf.store import Store

    s = Store.open(DATASET, create=True)
    if s.count(status=None) < 20:
        for i in range(20):
            s.ingest(picture(i), s.label_or_create(LABELS[i % len(LABELS)]).display)
    hashes = [r.phash for r in s.page(limit=20).rows]
    t = time.perf_counter()
    fill(s, n, hashes)
    print(f"dataset of {s.count(status=None):,} pictures ready ({time.perf_counter() - t:.0f} s)", flush=True)
    s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--home")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    home = Path(a.home) if a.home else Path(tempfile.mkdtemp(prefix="dragonclf-open-"))
    home.mkdir(parents=True, exist_ok=True)
    build(home, a.n)
    from dragonclf import store as store_mod
    from dragonclf.store import Store

    out = {"n": a.n, "loadavg_start": os.getloadavg()}
    status_once(home)  # the first open after the fill lists everything once (a manifest written without markers)
    out["status_clean"] = median_status(home, a.repeat)
    crashed = []
    for _ in range(a.repeat):
        s = Store.open(DATASET)
        ids = [r.id for r in s.page(label=LABELS[1], limit=50).rows]
        s.close()
        store_mod.close_all()
        killed_relabel(home, ids, LABELS[2])
        crashed.append(status_once(home))  # this open finishes the 50 moves
        s = Store.open(DATASET)
        assert all(s.image(i).path.is_file() and s.image(i).label == LABELS[2] for i in ids)
        s.relabel(ids, LABELS[1])  # back, for the next round
        s.close()
    out["status_after_killed_edit"] = {"wall_s": statistics.median(w for w, _ in crashed),
                                       "cpu_s": statistics.median(c for _, c in crashed),
                                       "runs": [round(w, 3) for w, _ in crashed]}
    t = time.perf_counter()
    s = Store.open(DATASET)
    out["open_in_process_s"] = time.perf_counter() - t
    t = time.perf_counter()
    s.recover(full=True)
    out["full_check_in_process_s"] = time.perf_counter() - t
    s.close()
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
