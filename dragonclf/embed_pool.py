"""Embedding many pictures in parallel processes on a CPU: one ONNX Runtime session per worker.

`embed_parallel(todo, ...)` splits the pictures still missing from the cache into one shard
per worker. Each worker is a fresh interpreter (`python -m dragonclf.embed_pool`: the app's own
main module is never run again in it, as multiprocessing's spawn would) with a single-threaded
session; it decodes and embeds its shard a batch at a time and appends each batch to the cache's
vector file itself (appends from many processes queue on its flock; a killed worker loses at most
the batch in flight, and the next pass does only what is missing). The parent follows the workers'
progress lines, stops them all on cancel, and raises the first worker's error as a DragonError.

Worth it from a few hundred pictures: a worker starts in a second or two (numpy, Pillow, ONNX
Runtime, the session), then decoding and the forward pass run on every core instead of one
decoding thread feeding ONNX Runtime's pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from dragonclf.errors import DragonError
from dragonclf.onnxbody import cores
from dragonclf.progress import Cancelled, report

PARALLEL_FROM = 256  # fewer pictures to embed than this: in-process (starting workers costs seconds)


def default_workers(n_todo: int) -> int:
    """Worker processes for `n_todo` pictures: `DRAGONCLF_EMBED_WORKERS`, else one per core from PARALLEL_FROM."""
    env = os.environ.get("DRAGONCLF_EMBED_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DragonError(f"DRAGONCLF_EMBED_WORKERS must be a whole number, not {env!r}") from None
    return cores() if n_todo >= PARALLEL_FROM else 1


def embed_parallel(todo, folder: Path, dim: int, backbone: str, size: int, workers: int, batch_size: int = 32,
                   progress=None, cancel: threading.Event | None = None) -> None:
    """Embed `todo` (items with .sha256 and .path, one per sha256) into the vector file at `folder`.

    `workers` processes, each with its share of the pictures and a 1-thread session (spare cores,
    when there are fewer workers than cores, go to the sessions' thread pools).
    """
    workers = max(1, min(workers, len(todo)))
    threads = max(1, cores() // workers)
    done, lock = [0], threading.Lock()
    with tempfile.TemporaryDirectory(prefix="dragonclf-embed-") as tmp:
        # The package's own folder first on the path: a worker imports this very dragonclf, however we were started.
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
        procs, logs = [], []
        for k in range(workers):
            tasks = Path(tmp) / f"shard-{k}.json"
            tasks.write_text(json.dumps([[it.sha256, str(it.path)] for it in todo[k::workers]]))
            cmd = [sys.executable, "-m", "dragonclf.embed_pool", str(folder), str(dim), backbone, str(size),
                   str(threads), str(batch_size), str(tasks)]
            logs.append(open(Path(tmp) / f"shard-{k}.err", "w+"))  # a file, not a pipe: a chatty worker never blocks
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logs[-1], text=True, env=env,
                                          start_new_session=True))

        def follow(p):
            for line in p.stdout:
                if line.startswith("done "):
                    with lock:
                        done[0] += int(line.split()[1])
                        n = done[0]
                    report(progress, n / len(todo), f"Embedding images: {n}/{len(todo)} ({backbone}, {workers} processes)")
                if cancel is not None and cancel.is_set():
                    for q in procs:  # Stop at once, from here: the batches appended so far stay in the cache
                        q.kill()

        readers = [threading.Thread(target=follow, args=(p,), daemon=True) for p in procs]
        for t in readers:
            t.start()
        try:
            while any(t.is_alive() for t in readers) and not (cancel is not None and cancel.is_set()):
                for t in readers:
                    t.join(0.2)
            if cancel is not None and cancel.is_set() and done[0] < len(todo):
                raise Cancelled(f"Stopped after embedding {done[0]} of {len(todo)} new images (kept in the cache).")
            errors = []
            for p, log in zip(procs, logs):
                if p.wait() != 0:
                    log.seek(0)
                    errors.append(log.read().strip())
        finally:
            for p, log in zip(procs, logs):
                if p.poll() is None:
                    p.kill()
                    p.wait()
                p.stdout.close()
                log.close()
    if errors:
        last = errors[0].splitlines()[-1] if errors[0] else "no message"
        raise DragonError(f"{len(errors)} of {workers} embedding processes failed: {last}")


def _work(folder: str, dim: str, backbone: str, size: str, threads: str, batch_size: str, tasks: str) -> None:
    """A worker: embed its shard a batch at a time, append each batch to the vector file, say how many."""
    import numpy as np

    from dragonclf import backbones, onnxbody
    from dragonclf.preprocess import load_image, to_array
    from dragonclf.vector_file import VectorFile

    size_i, bs = int(size), int(batch_size)
    b = backbones.get_backbone(backbone)
    body = onnxbody.OrtBody(backbone, size_i, threads=int(threads))
    vf = VectorFile(folder, int(dim))
    shard = json.loads(Path(tasks).read_text())
    for start in range(0, len(shard), bs):
        batch = shard[start:start + bs]
        x = np.stack([to_array(load_image(path), size_i, b.mean, b.std) for _, path in batch])
        vf.add([sha for sha, _ in batch], body(x).astype(np.float16))
        print(f"done {len(batch)}", flush=True)
    vf.close()


if __name__ == "__main__":
    _work(*sys.argv[1:8])
