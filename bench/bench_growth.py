"""Benchmark: how a dataset behaves as it grows to 100,000 pictures.

Synthetic 192-px pictures (smooth colour fields with a few random shapes and a
little noise: every one distinct, about 1 in 100 a slightly brightened copy of
an earlier one, so the near-duplicate index has work to do) are imported 1,000
at a time through `importer.import_path`, the path `python -m dragonclf import`
takes, into one store with 10 labels. 1 in 100 is trashed after each batch.

`--fill` (for sizes a shared 2-core machine cannot import in an afternoon): before each
checkpoint the manifest is filled up to (size - 1,000) with rows whose files are hard
links of one stored picture and whose perceptual hashes are real hashes of synthetic
pictures with 10-16 random bits flipped (the same bit biases, mostly beyond the
near-duplicate distance); then 1,000 new pictures are imported through the real path
and timed. What an import costs depends on the manifest and the folders it lands in,
which the fill reproduces; the fill itself is not timed. Times are wall and CPU
(user + system of this process: the figure that the other processes on a shared
machine do not inflate).

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


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fill(store, upto: int, template_hashes: list[str], seed: int = 0) -> None:
    """Rows (and hard-linked files) up to `upto` images; see --fill in the module docstring."""
    import random
    import sqlite3

    have = store.count(status=None)
    if have >= upto:
        return
    rng = random.Random(seed + have)
    folders = {lab.display: lab.folder for lab in store.labels()}
    # One template picture per label: ext4 allows 65,000 links to one file
    templates = {folders[name]: store.page(label=name, limit=1).rows[0] for name in LABELS}
    rows, now = [], time.time()
    for i in range(have, upto):
        folder = folders[LABELS[i % len(LABELS)]]
        template = templates[folder]
        image_id = f"f{i:015x}"
        h = int(rng.choice(template_hashes), 16)
        for bit in rng.sample(range(64), rng.randint(10, 16)):
            h ^= 1 << bit
        link = store.root / folder / f"{image_id}.jpg"
        if not link.exists():
            os.link(template.path, link)
        rows.append((image_id, template.sha256, f"{h:016x}", 192, 192, folder, "active", rng.random(), "fill",
                     now - 1e6 + i))
    con = sqlite3.connect(store.db_path, timeout=60)
    with con:
        con.executemany("INSERT OR IGNORE INTO images(id, sha256, phash, width, height, folder, status, split_key,"
                        " origin, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    con.close()


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


def run(sizes: list[int], home: Path, log: Path, filled: bool) -> None:
    os.environ["DRAGONCLF_HOME"] = str(home)
    from dragonclf.importer import import_path
    from dragonclf.store import Store

    store = Store.open(DATASET, create=True)
    done = store.count(status=None)
    template_hashes: list[str] = []
    seed = 0
    with open(log, "a") as out:
        while done < max(sizes):
            if filled and template_hashes:
                nxt = min(s for s in sizes if s > done)
                fill(store, nxt - 1000, template_hashes)
                done = store.count(status=None)
            with tempfile.TemporaryDirectory(prefix="growth-") as tmp:
                t = time.perf_counter()
                write_batch(Path(tmp), seed, 1000)
                made = time.perf_counter() - t
                t, c = time.perf_counter(), cpu_s()
                report = import_path(store, tmp)
                took, took_cpu = time.perf_counter() - t, cpu_s() - c
            seed += 1000
            done = store.count(status=None)
            ids = [it["id"] for it in report.items if it["outcome"] == "added"]
            template_hashes = template_hashes or [r.phash for r in store.images_by_id(ids).values()]
            store.trash(ids[::100])
            row = {"size": done, "import_s": took, "import_cpu_s": took_cpu, "added": report.added,
                   "duplicates": report.duplicates, "generate_s": made, "peak_rss_mb": peak_rss_mb(),
                   "loadavg": os.getloadavg()[0], "filled": filled, "at": time.time()}
            if any(done - 1000 < s <= done for s in sizes):
                row.update(checkpoint(store, home))
                row["peak_rss_mb"] = peak_rss_mb()
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps(row), flush=True)


def report(log: Path) -> str:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    checkpoints = [r for r in rows if "gallery_page_s" in r]
    first_cpu = rows[0].get("import_cpu_s") or 1.0
    lines = ["| pictures | last 1,000 imported: wall | CPU | CPU vs first 1,000 | status (process) | gallery page "
             "| trash page | near-dup queue (60 cards) | peak RSS | load avg |", "| " + " | ".join(["---"] * 10) + " |"]
    for r in checkpoints:
        lines.append(f"| {r['size']:,} | {r['import_s']:.1f} s | {r.get('import_cpu_s', 0):.1f} s | "
                     f"{r.get('import_cpu_s', 0) / first_cpu:.2f}x | "
                     f"{r['status_process_s']:.2f} s | {r['gallery_page_s'] * 1000:.1f} ms | "
                     f"{r['trash_page_s'] * 1000:.1f} ms | {r['duplicate_queue_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | "
                     f"{r['loadavg']:.1f} |")
    imports = [r.get("import_cpu_s", r["import_s"]) for r in rows]
    deciles = [statistics.median(imports[i:i + max(1, len(imports) // 10)])
               for i in range(0, len(imports), max(1, len(imports) // 10))]
    lines.append("")
    lines.append(f"CPU seconds per 1,000 over the run (median of each tenth, {len(rows)} batches): "
                 + ", ".join(f"{x:.1f}" for x in deciles) + ".")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000,100000")
    ap.add_argument("--home", help="DRAGONCLF_HOME to grow in (default: a fresh temp folder); reruns continue it")
    ap.add_argument("--log", default="growth.jsonl")
    ap.add_argument("--report", help="print the table for a log instead of running")
    ap.add_argument("--fill", action="store_true", help="fill the manifest between checkpoints (see the docstring)")
    a = ap.parse_args()
    if a.report:
        print(report(Path(a.report)))
        return
    home = Path(a.home) if a.home else Path(tempfile.mkdtemp(prefix="dragonclf-growth-"))
    home.mkdir(parents=True, exist_ok=True)
    print(f"home: {home}", flush=True)
    run(sorted(int(s) for s in a.sizes.split(",")), home, Path(a.log), a.fill)


if __name__ == "__main__":
    main()
