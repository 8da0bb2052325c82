"""Benchmark: how a dataset behaves as it grows to 100,000 pictures.

Synthetic 192-px pictures (smooth colour fields with a few random shapes and a
little noise: every one distinct, about 1 in 100 a slightly brightened copy of
an earlier one, so the near-duplicate index has work to do) are imported 1,000
at a time through `importer.import_path`, the path `python -m dragonclf import`
takes, into one store with 10 labels. 1 in 100 is trashed after each batch.

At each checkpoint size (default 1k, 10k, 50k, 100k) it records:
- the time of the last 1,000-picture import (and its per-picture figure);
- `python -m dragonclf status` as a whole process (wall time, median of 3);
- a gallery page (60 pictures of one label, from the middle of the label), a page of
  the trash and a page of the near-duplicate queue, the library calls behind the views;
- peak RSS of this process so far (it is the process that imports and serves the pages).

Every batch is appended to a JSON-lines log as it finishes (--log), so a run cut
short still has its figures. Run:
    .venv/bin/python bench/bench_growth.py --sizes 1000,10000,50000,100000 --log /tmp/growth.jsonl
    .venv/bin/python bench/bench_growth.py --report /tmp/growth.jsonl   # write RESULTS.md from a log
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LABELS = [f"class{i:02d}" for i in range(10)]
DATASET = "growth"


def picture(seed: int, brighten: float = 1.0) -> bytes:
    """A distinct 192-px JPEG: a smooth 4x4 colour field, three shapes, a little noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageEnhance

    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((192, 192), Image.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(3):
        x0, y0 = rng.integers(0, 150, 2)
        w, h = rng.integers(20, 90, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x0 + w), int(y0 + h)],
                                                                  fill=colour)
    arr = np.asarray(field, dtype=np.int16) + rng.integers(-6, 7, (192, 192, 3))
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if brighten != 1.0:
        im = ImageEnhance.Brightness(im).enhance(brighten)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def write_batch(folder: Path, start: int, n: int) -> None:
    """Pictures start..start+n-1 as <label>/<n>.jpg; every 100th is a brightened copy of an earlier one."""
    for i in range(start, start + n):
        label = LABELS[i % len(LABELS)]
        (folder / label).mkdir(parents=True, exist_ok=True)
        data = picture(i - 37 if i % 100 == 99 and i >= 37 else i, 1.06 if i % 100 == 99 else 1.0)
        (folder / label / f"{i:07d}.jpg").write_bytes(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def status_process(home: Path) -> float:
    env = {**os.environ, "DRAGONCLF_HOME": str(home), "PYTHONPATH": str(REPO)}

    def run():
        subprocess.run([sys.executable, "-m", "dragonclf", "status", "--dataset", DATASET], env=env, check=True,
                       capture_output=True)

    return timed(run)[0]


def checkpoint(store, home: Path) -> dict:
    from dragonclf import clean

    label = LABELS[3]
    n_label = store.count(label=label)
    gallery_s, page = timed(lambda: store.page(label=label, offset=n_label // 2, limit=60))
    trash_s, trash = timed(lambda: store.page(status="trashed", limit=60))
    dup_s, dups = timed(lambda: clean.duplicate_suspects(store)[:60], repeat=1)
    status_s, _ = timed(store.status)
    return {"status_process_s": status_process(home), "status_call_s": status_s, "gallery_page_s": gallery_s,
            "gallery_rows": len(page.rows), "trash_page_s": trash_s, "trash_total": trash.total,
            "duplicate_queue_s": dup_s, "duplicate_cards": len(dups), "loadavg": os.getloadavg()[0]}


def run(sizes: list[int], home: Path, log: Path) -> None:
    os.environ["DRAGONCLF_HOME"] = str(home)
    from dragonclf.importer import import_path
    from dragonclf.store import Store

    store = Store.open(DATASET, create=True)
    done = store.count(status=None)
    with open(log, "a") as out:
        while done < max(sizes):
            with tempfile.TemporaryDirectory(prefix="growth-") as tmp:
                t = time.perf_counter()
                write_batch(Path(tmp), done, 1000)
                made = time.perf_counter() - t
                t = time.perf_counter()
                report = import_path(store, tmp)
                took = time.perf_counter() - t
            done += 1000
            ids = [it["id"] for it in report.items if it["outcome"] == "added"]
            store.trash(ids[::100])
            row = {"size": done, "import_s": took, "added": report.added,
                   "duplicates": report.duplicates, "generate_s": made, "peak_rss_mb": peak_rss_mb(),
                   "loadavg": os.getloadavg()[0], "at": time.time()}
            if done in sizes:
                row.update(checkpoint(store, home))
                row["peak_rss_mb"] = peak_rss_mb()
            out.write(json.dumps(row) + "\n")
            out.flush()
            if done in sizes or done % 5000 == 0:
                print(json.dumps(row), flush=True)


def report(log: Path) -> str:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    checkpoints = [r for r in rows if "gallery_page_s" in r]
    first = rows[0]["import_s"]
    lines = ["| pictures | last 1,000 imported | vs first 1,000 | status (process) | gallery page | trash page "
             "| near-dup queue (60 cards) | peak RSS | load avg |", "| " + " | ".join(["---"] * 9) + " |"]
    for r in checkpoints:
        lines.append(f"| {r['size']:,} | {r['import_s']:.1f} s | {r['import_s'] / first:.2f}x | "
                     f"{r['status_process_s']:.2f} s | {r['gallery_page_s'] * 1000:.1f} ms | "
                     f"{r['trash_page_s'] * 1000:.1f} ms | {r['duplicate_queue_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['loadavg']:.1f} |")
    imports = [r["import_s"] for r in rows]
    deciles = [statistics.median(imports[i:i + max(1, len(imports) // 10)])
               for i in range(0, len(imports), max(1, len(imports) // 10))]
    lines.append("")
    lines.append(f"Seconds per 1,000 over the whole run (median of each tenth, {len(rows)} batches): "
                 + ", ".join(f"{x:.1f}" for x in deciles) + ".")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--home", help="DRAGONCLF_HOME to grow in (default: a fresh temp folder); reruns continue it")
    ap.add_argument("--log", default="growth.jsonl")
    ap.add_argument("--report", help="print the table for a log instead of running")
    a = ap.parse_args()
    if a.report:
        print(report(Path(a.report)))
        return
    home = Path(a.home) if a.home else Path(tempfile.mkdtemp(prefix="dragonclf-growth-"))
    home.mkdir(parents=True, exist_ok=True)
    print(f"home: {home}", flush=True)
    run(sorted(int(s) for s in a.sizes.split(",")), home, Path(a.log))


if __name__ == "__main__":
    main()
