"""Load: N concurrent `predict` calls through gradio_client against the running app.

Launches app.py's `demo` on loopback with a temporary DRAGONCLF_HOME, fits the
quick model on the bundled demo dataset, then fires N predictions at once (one
gradio_client per caller, as N browsers would) and checks each answer against
the same model called directly. Prints p50/p95/p99 latency and throughput.

    .venv/bin/python bench/bench_load.py [--calls 50]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["DRAGONCLF_HOME"] = tempfile.mkdtemp(prefix="dragonclf-load-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()

    import app
    from gradio_client import Client, handle_file

    from dragonclf.predict import Predictor
    from dragonclf.store import Store
    from dragonclf.train import train

    store = Store.open("demo")
    model = train(store, mode="quick", dataset="demo").model_dir
    images = [r.path for r in store.images(split="valid")]
    expected = {str(p): next(iter(Predictor(model).predict_image(p))) for p in images}

    port = free_port()
    app.demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, server_name="127.0.0.1",
                                                       server_port=port, ssr_mode=False, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    clients = [Client(url, verbose=False) for _ in range(args.calls)]  # connected before the clock starts
    jobs = [str(images[i % len(images)]) for i in range(args.calls)]

    def call(i):
        t = time.perf_counter()
        out = clients[i].predict(handle_file(jobs[i]), "demo", model.name, 3, api_name="/predict")
        return time.perf_counter() - t, out["label"] == expected[jobs[i]]

    start = time.perf_counter()
    with ThreadPoolExecutor(args.calls) as pool:
        results = list(pool.map(call, range(args.calls)))
    wall = time.perf_counter() - start
    app.demo.close()

    lat = [r[0] * 1000 for r in results]
    correct = sum(r[1] for r in results)
    print(f"{args.calls} concurrent predict calls: {correct}/{args.calls} correct")
    print(f"latency ms: p50 {percentile(lat, .5):.0f}  p95 {percentile(lat, .95):.0f}  p99 {percentile(lat, .99):.0f}"
          f"  mean {statistics.mean(lat):.0f}")
    print(f"throughput: {args.calls / wall:.1f} predictions/s over {wall:.2f} s wall (load avg {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
