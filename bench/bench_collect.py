"""Benchmark: our collector against fastai's download_images + verify_images + resize_images.

A loopback server in a separate process serves 400 distinct real photos (the
122 shared photos, each copy cropped and re-encoded differently) and 40 bad
responses (404, 500, HTML sent as JPEG, truncated JPEGs, zero bytes, SVG,
12000x12000 PNG bombs), adding 50 ms of latency to every response. Both sides
get the same URLs in the same order:

  (a) fastai: download_images(n_workers=8) -> verify_images -> delete the
      failures -> resize_images(max_size=512) into the folder one trains from;
  (b) dragonclf.collect.collect(urls=...) into a fresh store.

It prints usable images per second for each, the ratio, and how many bad files
each left in the folder one would train from: files that came from a bad URL,
or that do not decode fully. Run:  .venv/bin/python bench/bench_collect.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the loopback server helper

N_GOOD, LATENCY = 400, 0.05
# Search results come from many sites; four loopback hosts stand in for them (URL i goes to
# host i % 4). Our per-host limit (8) stays on; fastai keeps its 8 threads in all.
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")


def build_routes():
    """(path, body, content type) for every URL, good first then bad, in a fixed order."""
    from PIL import Image

    from httpserver import png_bomb, real_photos

    photos = real_photos()
    routes = []
    for i in range(N_GOOD):
        k, src = divmod(i, len(photos))
        im = Image.open(photos[src]).convert("RGB")
        w, h = im.size
        # A different crop and size per copy: distinct pixels, so none is a duplicate.
        im = im.crop((2 * k + 1, k + 1, w - k - 1, h - 2 * k - 1)).resize((w - 10 * k, h - 7 * k))
        buf = io.BytesIO()
        fmt, ext, ctype = (("JPEG", "jpg", "image/jpeg") if i % 2 == 0 else ("WEBP", "webp", "image/webp"))
        im.save(buf, fmt, quality=88)
        routes.append((f"/good/{i:04d}.{ext}", buf.getvalue(), ctype))
    jpeg = routes[0][1]
    bomb = png_bomb(12000)
    bad = ([("status404", b"", "404")] * 8 + [("status500", b"", "500")] * 8 +
           [("html", b"<!DOCTYPE html><html><body>captcha</body></html>", "image/jpeg")] * 6 +
           [("truncated", jpeg[: len(jpeg) // 3], "image/jpeg")] * 6 +
           [("zero", b"", "image/jpeg")] * 4 +
           [("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image/jpeg")] * 4 +
           [("bomb", bomb, "image/png")] * 4)
    for j, (kind, body, ctype) in enumerate(bad):
        ext = "png" if kind == "bomb" else "jpg"
        routes.append((f"/bad/{kind}-{j:02d}.{ext}", body, ctype))
    random.Random(0).shuffle(routes)  # bad links sit among good ones, as in real search results
    return routes


def serve() -> None:
    """Child process: build the content, serve it, print the port, run until stdin closes."""
    from httpserver import LoopbackServer

    servers = [LoopbackServer(host=host, latency=LATENCY) for host in HOSTS]
    paths = []
    for path, body, ctype in build_routes():
        for server in servers:
            if ctype in ("404", "500"):
                server.add_status(path, int(ctype))
            else:
                server.add_bytes(path, body, ctype)
        paths.append(path)
    print(json.dumps({"ports": [s.port for s in servers], "paths": paths}), flush=True)
    sys.stdin.read()
    for server in servers:
        server.close()


def bad_files(folder: Path, came_from_bad) -> int:
    """Files one would train on that came from a bad URL or do not decode fully."""
    from PIL import Image

    count = 0
    for f in folder.rglob("*"):
        if not f.is_file() or f.name.startswith("manifest"):
            continue
        try:
            with Image.open(f) as im:
                im.load()
            ok = True
        except Exception:  # noqa: BLE001 -- any failure to decode makes it a bad file; that is what we count
            ok = False
        count += (not ok) or came_from_bad(f)
    return count


def run_fastai(urls, work: Path) -> dict:
    from fastai.vision.utils import download_images, get_image_files, resize_images, verify_images

    raw, out = work / "fastai-raw", work / "fastai"
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # fastprogress bars from its parallel workers
        download_images(raw, urls=urls, n_workers=8, preserve_filename=True)
        failed = verify_images(get_image_files(raw))
        for f in failed:
            f.unlink()
        resize_images(raw, max_size=512, dest=out)
    seconds = time.perf_counter() - t
    bad_stems = {Path(u).stem for u in urls if "/bad/" in u}
    kept = [f for f in out.rglob("*") if f.is_file()]
    bad = bad_files(out, lambda f: f.stem in bad_stems)
    leftovers = sum(1 for f in raw.rglob("*") if f.is_file() and f.suffix == ".part")
    return {"seconds": seconds, "usable": len(kept) - bad, "files": len(kept), "bad_files": bad,
            "part_files_left": leftovers}


def run_ours(urls, work: Path, n: int = 0) -> dict:
    os.environ["DRAGONCLF_HOME"] = str(work / "home")
    from dragonclf.collect import collect
    from dragonclf.download import FetchConfig
    from dragonclf.store import Store

    store = Store.open(f"bench{n}", create=True)
    t = time.perf_counter()
    report = collect(store, "photos", urls=urls, max_images=None, cfg=FetchConfig(allow_private=True))
    seconds = time.perf_counter() - t
    bad_sources = {u for u in urls if "/bad/" in u}
    by_path = {str(r.path): r.source for r in store.images()}
    folder = store.root / store.label("photos").folder
    bad = bad_files(folder, lambda f: by_path.get(str(f)) in bad_sources or str(f) not in by_path)
    return {"seconds": seconds, "usable": report.added - bad, "files": len(list(folder.glob("*"))),
            "bad_files": bad, "refused": dict(report.refused), "duplicates": report.duplicates}


def fastai_steps(urls, work: Path) -> None:
    """fastai's collection, as the body of a whole process (`--fastai-child`)."""
    from fastai.vision.utils import download_images, get_image_files, resize_images, verify_images

    raw, out = work / "fastai-raw", work / "fastai"
    with contextlib.redirect_stdout(io.StringIO()):
        download_images(raw, urls=urls, n_workers=8, preserve_filename=True)
        for f in verify_images(get_image_files(raw)):
            f.unlink()
        resize_images(raw, max_size=512, dest=out)


def run_processes(urls, work: Path, n: int = 0) -> dict:
    """Both sides as whole processes, timed from start to exit (imports included): what a person waits for."""
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DRAGONCLF_HOME": str(work / "home"),
           "DRAGONCLF_ALLOW_PRIVATE_URLS": "1"}
    t = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--fastai-child", str(listing), str(work)], env=env, check=True)
    fastai_s = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dragonclf", "collect", "--dataset", f"proc{n}", "--label", "photos",
                    "--urls", str(listing), "--quiet", "--json"], env=env, check=True, capture_output=True)
    ours_s = time.perf_counter() - t
    bad_stems = {Path(u).stem for u in urls if "/bad/" in u}
    out = work / "fastai"
    kept = [f for f in out.rglob("*") if f.is_file()]
    fastai_bad = bad_files(out, lambda f: f.stem in bad_stems)
    os.environ["DRAGONCLF_HOME"] = str(work / "home")
    from dragonclf.store import Store

    store = Store.open(f"proc{n}")
    bad_sources = {u for u in urls if "/bad/" in u}
    by_path = {str(r.path): r.source for r in store.images()}
    folder = store.root / store.label("photos").folder
    ours_bad = bad_files(folder, lambda f: by_path.get(str(f)) in bad_sources or str(f) not in by_path)
    return {"fastai": {"seconds": fastai_s, "usable": len(kept) - fastai_bad, "bad_files": fastai_bad},
            "dragonclf": {"seconds": ours_s, "usable": len(by_path) - ours_bad, "bad_files": ours_bad}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", choices=("fastai", "ours"), help="run one side only")
    ap.add_argument("--repeat", type=int, default=1, help="runs (fresh folders each time); prints the median")
    ap.add_argument("--process", action="store_true",
                    help="each side as a whole process (python -m dragonclf collect vs a fastai script), imports included")
    ap.add_argument("--fastai-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return 0
    if args.fastai_child:
        fastai_steps(Path(args.fastai_child[0]).read_text().splitlines(), Path(args.fastai_child[1]))
        return 0
    os.environ.setdefault("MPLBACKEND", "Agg")
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        hello = json.loads(server.stdout.readline())
        urls = [f"http://{HOSTS[i % len(HOSTS)]}:{hello['ports'][i % len(HOSTS)]}{path}"
                for i, path in enumerate(hello["paths"])]
        print(f"{N_GOOD} good + {len(urls) - N_GOOD} bad URLs on {len(HOSTS)} loopback hosts, "
              f"{LATENCY * 1000:.0f} ms latency per response, {os.cpu_count()} CPUs")
        runs = []
        for n in range(args.repeat):
            results = {}
            with tempfile.TemporaryDirectory() as tmp:  # a fresh folder and store for every run
                if args.process:
                    results = run_processes(urls, Path(tmp), n)
                elif args.only in (None, "fastai"):
                    results["fastai"] = run_fastai(urls, Path(tmp))
                if args.only in (None, "ours") and not args.process:
                    results["dragonclf"] = run_ours(urls, Path(tmp), n)
            print(f"run {n + 1}/{args.repeat} (load average {os.getloadavg()[0]:.1f})")
            for name, r in results.items():
                r["images_per_s"] = r["usable"] / r["seconds"]
                extra = {k: v for k, v in r.items() if k not in ("seconds", "usable", "bad_files", "images_per_s")}
                print(f"  {name:10s} {r['usable']:4d} usable in {r['seconds']:6.2f} s = {r['images_per_s']:6.1f} img/s, "
                      f"bad files left: {r['bad_files']}  {json.dumps(extra)}")
            if len(results) == 2:
                results["ratio"] = results["dragonclf"]["images_per_s"] / results["fastai"]["images_per_s"]
                print(f"  ratio: {results['ratio']:.2f}x fastai")
            runs.append(results)
        if len(runs) > 1 and all("ratio" in r for r in runs):
            med = statistics.median
            print(f"median of {len(runs)}: fastai {med(r['fastai']['images_per_s'] for r in runs):.1f} img/s, "
                  f"dragonclf {med(r['dragonclf']['images_per_s'] for r in runs):.1f} img/s, "
                  f"ratio {med(r['ratio'] for r in runs):.2f}x")
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
