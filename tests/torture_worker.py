"""One worker of the torture test (tests/test_torture.py, bench/soak.py): random work on one dataset until killed.

    python tests/torture_worker.py <dataset> <images folder> <urls file> <log file> <seed> <threads>|cli

Each thread loops over: import a picture, collect a few URLs from the loopback image host, relabel, trash,
restore, undo, redo, rescan with repair, now and then Empty trash or publishing a model folder. What it
reports goes to the log, one line per fact, written and fsynced only after the library returned:
"stored <id>" (an add the library reported), and, before each trash, "trashing <ids>" (an intent: only
trashed pictures may ever disappear). With "cli" instead of a thread count, each step is a real
`python -m dragonclf` command in a child process (import, relabel, trash, undo, check --repair), killed
with the worker (the driver kills the whole process group). Expected refusals (a busy label, nothing to undo) are not failures;
anything else is printed and the worker exits 3, which the driver counts as a failure.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import traceback
from pathlib import Path

from dragonclf import modelstore
from dragonclf.collect import collect
from dragonclf.errors import DragonError
from dragonclf.store import Store

LABELS = ("cats", "dogs", "birds")


class Log:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            os.write(self.fd, (line + "\n").encode())
            os.fsync(self.fd)


def publish_model(dataset: str, rnd: random.Random) -> None:
    """What a training does last: a model folder written in staging and renamed into place."""
    model_id = f"m{rnd.randrange(10**9)}"
    with modelstore.staging(dataset, model_id) as tmp:
        payload = os.urandom(rnd.randrange(1000, 50_000))
        (tmp / "model.onnx").write_bytes(payload)
        import hashlib
        import json

        (tmp / "model.json").write_text(json.dumps({"onnx_sha256": hashlib.sha256(payload).hexdigest()}))


def step(store: Store, rnd: random.Random, images: list[Path], urls: list[str], log: Log) -> None:
    op = rnd.choices(["import", "collect", "relabel", "trash", "restore", "undo", "redo", "rescan", "empty", "model"],
                     [30, 12, 15, 10, 6, 5, 3, 5, 2, 2])[0]
    active = [r.id for r in store.images()]
    if op == "import":
        f = rnd.choice(images)
        r = store.ingest(f.read_bytes(), rnd.choice(LABELS), {"origin": "import", "source": f.name})
        if r.outcome == "added":
            log.write(f"stored {r.image_id}")
    elif op == "collect":
        label = rnd.choice(LABELS)

        def on_item(item):
            if item.outcome == "added":
                log.write(f"stored {item.image_id}")

        collect(store, label, urls=rnd.sample(urls, 3), max_images=None, on_item=on_item)
    elif op == "relabel" and active:
        store.relabel(rnd.sample(active, min(3, len(active))), rnd.choice(LABELS))
    elif op == "trash" and active:
        ids = rnd.sample(active, min(2, len(active)))
        log.write("trashing " + " ".join(ids))
        store.trash(ids)
    elif op == "restore":
        trashed = [r.id for r in store.images(status="trashed")]
        if trashed:
            store.restore(rnd.sample(trashed, 1))
    elif op in ("undo", "redo"):
        try:
            getattr(store, op)()
        except DragonError:
            pass  # nothing to undo / redo
    elif op == "rescan":
        store.rescan(repair=True)
    elif op == "empty":
        trashed = [r.id for r in store.images(status="trashed")]
        if trashed:
            log.write("trashing " + " ".join(trashed))  # (already logged when trashed; harmless)
        store.empty_trash()
    elif op == "model":
        publish_model(store.name, rnd)


def cli_step(store: Store, rnd: random.Random, images: list[Path], log: Log) -> None:
    """One real CLI command on the dataset, as a person in another shell would type it."""
    import subprocess

    from dragonclf.ingest import normalise

    op = rnd.choices(["import", "relabel", "trash", "undo", "check"], [40, 20, 15, 10, 15])[0]
    active = [r.id for r in store.images()]
    base = [sys.executable, "-m", "dragonclf"]
    if op == "import":
        f = rnd.choice(images)
        image_id = normalise(f.read_bytes()).image_id
        r = subprocess.run(base + ["import", "--dataset", store.name, "--label", rnd.choice(LABELS), str(f), "--json"],
                           capture_output=True, text=True)
        if r.returncode == 0 and '"added": 1' in r.stdout:
            log.write(f"stored {image_id}")
        return
    if op in ("relabel", "trash") and not active:
        return
    ids = rnd.sample(active, min(2, len(active))) if active else []
    if op == "trash":
        log.write("trashing " + " ".join(ids))
    cmd = {"relabel": ["relabel", "--dataset", store.name, "--to", rnd.choice(LABELS), *ids],
           "trash": ["trash", "--dataset", store.name, *ids], "undo": ["undo", "--dataset", store.name],
           "check": ["check", "--dataset", store.name, "--repair"]}[op]
    subprocess.run(base + cmd, capture_output=True)  # exit 1 is a message (nothing to undo, an id just emptied)


def main() -> None:
    dataset, images_dir, urls_file, log_path, seed, threads = sys.argv[1:7]
    images = sorted(Path(images_dir).glob("*.jpg"))
    urls = Path(urls_file).read_text().split()
    log = Log(log_path)
    store = Store.open(dataset)
    failures = []
    if threads == "cli":
        rnd = random.Random(seed)
        while True:
            cli_step(store, rnd, images, log)

    def run(k: int) -> None:
        rnd = random.Random(f"{seed}-{k}")
        try:
            while True:
                try:
                    step(store, rnd, images, urls, log)
                except DragonError:
                    pass  # a refusal people see as a message (an id another process just emptied, ...)
        except Exception:  # noqa: BLE001 - reported to the driver, which fails the test
            failures.append(traceback.format_exc())

    workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(int(threads))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    print("\n".join(failures), file=sys.stderr, flush=True)
    sys.exit(3)


if __name__ == "__main__":
    main()
