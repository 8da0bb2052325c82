"""CPU milliseconds per picture stored by `Store.ingest` (decode, JPEG encode, hashes, SQLite): the CPU-bound
part of a collect, measured in CPU time so that another job on the machine changes it little.

    .venv/bin/python bench/bench_ingest_cpu.py                 # this checkout
    .venv/bin/python bench/bench_ingest_cpu.py /tmp/old-tree   # another checkout of the repo (an A/B)

The shared photos (or the bundled demo), each re-encoded at three sizes, into a fresh store in a temporary home.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
os.environ["DRAGONCLF_HOME"] = tempfile.mkdtemp(prefix="dragonclf-bench-ingest-")
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from dragonclf.store import Store  # noqa: E402


def main() -> int:
    shared = REPO.parent / "shared" / "datasets" / "photos"
    photos_dir = shared if shared.is_dir() else REPO / "datasets" / "demo"
    photos = sorted(p for p in photos_dir.rglob("*") if p.suffix in (".webp", ".jpg"))
    blobs = []
    for k in range(3):
        for p in photos:
            im = Image.open(p).convert("RGB").resize((400 + 40 * k, 300 + 30 * k))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85 - k)
            blobs.append(buf.getvalue())
    store = Store.open("bench", create=True)
    store.add_label("x")
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = [store.ingest(b, "x").outcome for b in blobs]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{REPO}: {len(blobs)} offered, {outcomes.count('added')} added: {cpu / len(blobs) * 1000:.2f} ms CPU "
          f"each, {wall:.1f} s wall, 1-min load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
