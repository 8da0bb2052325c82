"""Drive torture workers on one dataset, SIGKILL them at random moments, then check the invariants.

Used by tests/test_torture.py (bounded, in CI) and bench/soak.py (long). See torture_worker.py for
what the workers do.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass
class Outcome:
    kills: int = 0
    restarts: int = 0
    seconds: float = 0.0
    worker_failures: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` small distinct JPEGs (random blocks: distinct perceptual hashes, cheap to decode)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(blocks).resize((64, 64), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        p = folder / f"img{i:04d}.jpg"
        p.write_bytes(buf.getvalue())
        out.append(p)
    return out


def run(home: Path, work: Path, seconds: float, min_kills: int, workers=(3, 1, "cli"),
        seed: int = 0, kill_gap=(0.2, 1.2), urls: list[str] | None = None) -> Outcome:
    """Run the workers for at least `seconds` and until `min_kills` kills; then stop them all and check."""
    env = {**os.environ, "DRAGONCLF_HOME": str(home), "DRAGONCLF_ALLOW_PRIVATE_URLS": "1",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    images = work / "images"
    (work / "urls.txt").write_text("\n".join(urls or []))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    out = Outcome()
    procs: list[subprocess.Popen | None] = [None] * len(workers)
    start = time.monotonic()

    def launch(k: int) -> None:
        threads = workers[k]  # threads sharing one store (as the app's handlers), or "cli": real CLI commands
        procs[k] = subprocess.Popen(
            [sys.executable, str(HERE / "torture_worker.py"), "torture", str(images), str(work / "urls.txt"),
             str(logs / f"w{k}.log"), f"{seed}-{k}-{out.restarts}", str(threads)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        out.restarts += 1

    for k in range(len(workers)):
        launch(k)
    try:
        while time.monotonic() - start < seconds or out.kills < min_kills:
            time.sleep(rnd.uniform(*kill_gap))
            for k, p in enumerate(procs):  # a worker that exited by itself failed
                if p.poll() is not None:
                    out.worker_failures.append(p.stderr.read()[-3000:])
                    launch(k)
            k = rnd.randrange(len(procs))
            os.killpg(procs[k].pid, signal.SIGKILL)  # the worker and the CLI command it is running
            procs[k].wait()
            procs[k].stderr.close()
            out.kills += 1
            launch(k)
    finally:
        for p in procs:
            if p is not None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # (already gone, with its group)
                p.wait()
                p.stderr.close()
    out.seconds = time.monotonic() - start
    out.violations, out.counts = check_invariants(home, logs)
    return out


def check_invariants(home: Path, logs: Path) -> tuple[list[str], dict]:
    """What must hold after any number of kills (run in a fresh process state: opens the store anew)."""
    os.environ["DRAGONCLF_HOME"] = str(home)
    from dragonclf import modelstore, store as store_mod
    from dragonclf.store import Store

    store_mod.close_all(home)
    s = Store.open("torture")
    getattr(s, "recover", lambda: None)()  # as the next open that finds the files lock free does
    bad = []
    rows = {r["id"]: dict(r) for r in s._db.execute("SELECT * FROM images")}
    # 1. every active (and trashed) row has its file, with the recorded hash
    for r in s.images(status=None):
        if r.status in ("active", "trashed"):
            if not r.path.is_file():
                bad.append(f"{r.status} row {r.id} has no file at {r.path.relative_to(s.root)}")
            elif hashlib.sha256(r.path.read_bytes()).hexdigest() != r.sha256:
                bad.append(f"{r.id}: file hash differs from its row")
        elif r.status == "missing":
            bad.append(f"{r.id} is marked missing: its file was lost")
    # 2. every file in a label folder or the trash has a row saying it is there
    report = s.check(repair=False)
    bad += [f"file without its row: {f}" for f in report["unknown_files"]]
    bad += [f"row without its file: {i}" for i in report["missing"]]
    pending = [i for i, r in rows.items() if r["status"] == "pending"]
    bad += [f"pending row left after recovery: {i}" for i in pending]
    # 3. the journal replays to the current state
    state: dict[str, tuple] = {}
    for j in s._db.execute("SELECT * FROM journal WHERE undone=0 ORDER BY seq"):
        state[j["image_id"]] = (j["after_folder"], j["after_status"], j["after_kept"] or 0)
    for i, r in rows.items():
        if r["status"] == "pending":
            continue
        if i not in state:
            bad.append(f"{i}: no journal entry adds it")
        elif state[i][:2] != (r["folder"], r["status"]) or (state[i][2] or 0) != (r["kept"] or 0):
            bad.append(f"{i}: journal replays to {state[i]}, row is {(r['folder'], r['status'], r['kept'])}")
    # 4. every picture a process reported stored is stored (or was trashed, and may have been emptied)
    stored, trashed = set(), set()
    for log in logs.glob("*.log"):
        for line in log.read_text().splitlines():
            word, _, rest = line.partition(" ")
            (stored if word == "stored" else trashed).update(rest.split())
    lost = sorted(i for i in stored if i not in rows and i not in trashed)
    bad += [f"reported stored, now gone without being trashed: {i}" for i in lost]
    # 5. no model folder half written; no staging folder of a dead writer left behind
    modelstore.clean_stale_staging("torture")
    d = modelstore.dataset_dir("torture")
    models = [p for p in d.iterdir() if not p.name.startswith(".")] if d.is_dir() else []
    for m in models:
        import json

        try:
            meta = json.loads((m / "model.json").read_text())
            ok = hashlib.sha256((m / "model.onnx").read_bytes()).hexdigest() == meta["onnx_sha256"]
        except (OSError, ValueError, KeyError):
            ok = False
        if not ok:
            bad.append(f"model folder {m.name} is half written")
    if d.is_dir():
        bad += [f"staging left behind: {p.name}" for p in d.iterdir() if p.name.startswith(".tmp-") and p.is_dir()]
    tmp = s.root / ".tmp"
    if tmp.is_dir() and any(tmp.iterdir()):
        bad.append(f"temp files of dead writers left: {sorted(p.name for p in tmp.iterdir())[:5]}")
    counts = {"rows": len(rows), "active": sum(r["status"] == "active" for r in rows.values()),
              "trashed": sum(r["status"] == "trashed" for r in rows.values()), "reported_stored": len(stored),
              "models": len(models), "journal": s._db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]}
    s.close()
    return bad, counts


def prepare(home: Path, work: Path, n_images: int = 300, server=None) -> list[str]:
    """The dataset with its labels, the pictures to import, and (with a LoopbackServer) URLs to collect."""
    os.environ["DRAGONCLF_HOME"] = str(home)
    from dragonclf.store import Store

    pictures = make_images(work / "images", n_images)
    s = Store.open("torture", create=True)
    for label in ("cats", "dogs", "birds"):
        s.add_label(label)
    s.close()
    urls = []
    if server is not None:
        extra = make_images(work / "web", n_images // 2, seed=1)
        urls = [server.add_file(f"/{p.name}", p) for p in extra]
    return urls if server is not None else [str(p) for p in pictures][:0]
