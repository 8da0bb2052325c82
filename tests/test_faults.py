"""kill -9 at random moments during collect, edit bursts and training; nothing is lost.

24 seeded trials. Each starts real work in a child process (the CLI or a burst
of store edits), kills it with SIGKILL after a random delay, reopens the store
and checks: every image stored before is still there, manifest and folders
agree, only finished models are listed (and they load), and the interrupted
work can be resumed to completion.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO
from dragonclf.modelstore import list_models
from dragonclf.predict import Predictor
from dragonclf.store import Store
from httpserver import LoopbackServer, real_photos

TRIALS = 24
KINDS = ("collect", "edits", "train")


def child_env(home) -> dict:
    return {**os.environ, "DRAGONCLF_HOME": str(home), "DRAGONCLF_ALLOW_PRIVATE_URLS": "1", "PYTHONPATH": str(REPO)}


EDIT_BURST = textwrap.dedent("""
    import random, sys
    from dragonclf.store import Decision, Store
    s = Store.open("faulty")
    rng = random.Random(int(sys.argv[1]))
    labels = [l.display for l in s.labels()]
    print("ready", flush=True)
    while True:
        rows = s.images(status=None)
        picks = rng.sample(rows, min(len(rows), rng.randint(1, 12)))
        kind = rng.choice(["relabel", "trash", "restore", "undo", "redo"])
        if kind == "undo" and s.can_undo():
            s.undo()
        elif kind == "redo" and s.can_redo():
            s.redo()
        elif kind in ("relabel", "trash", "restore"):
            s.apply([Decision(r.id, kind, rng.choice(labels) if kind == "relabel" else None) for r in picks])
""")


def snapshot(store: Store) -> dict[str, str]:
    """id -> status of every image the manifest knows."""
    return {r.id: r.status for r in store.images(status=None)}


def assert_consistent(home, known_before: set[str]) -> Store:
    from dragonclf import store as store_mod

    store_mod.close_all()  # a fresh open, as after a restart
    store = Store.open("faulty")
    check = store.check()
    assert check["ok"], check
    rows = store.images(status=None)
    ids = {r.id for r in rows}
    assert known_before <= ids, f"lost images: {known_before - ids}"
    assert all(r.path.exists() for r in rows if r.status in ("active", "trashed"))
    assert all(r.status in ("active", "trashed") for r in rows)  # none pending, none missing
    on_disk = {p.stem for p in store.root.rglob("*.jpg") if not any(part.startswith(".") and part != ".trash"
                                                                     for part in p.relative_to(store.root).parts)}
    assert on_disk == ids, f"files without rows: {on_disk - ids}; rows without files: {ids - on_disk}"
    for m in list_models("faulty"):
        assert "error" not in m, m
        assert Predictor(m["path"]).labels  # a listed model is a whole model
    return store


@pytest.fixture
def web():
    # Half a second per response, like a far-away host: a collection of 60 URLs takes ~5 s, so a kill
    # between 1 and 4 s always lands mid-collection.
    with LoopbackServer(latency=0.5) as server:
        yield server


def serve_photos(server: LoopbackServer, prefix: str, out: Path) -> list[str]:
    """Serve 60 photos under fresh URLs (so a collection has real work to do) and list them in out."""
    urls = [server.add_file(f"{prefix}/{i}{f.suffix}", f) for i, f in enumerate(real_photos()[:60])]
    out.write_text("\n".join(urls))
    return urls


def test_kill_9_at_random_moments_loses_nothing(home, web, tmp_path, photo_files):
    rng = random.Random(20261122)
    seed_store = Store.open("faulty", create=True)
    for label in ("fishes", "tools"):
        seed_store.add_label(label)
        for f in photo_files[label][:12]:
            seed_store.ingest(f.read_bytes(), label, {"origin": "import", "source": str(f)})
    urls: list[str] = []  # every URL a killed collection was given
    env = child_env(home)
    killed = {k: 0 for k in KINDS}
    for trial in range(TRIALS):
        kind = KINDS[trial % len(KINDS)]
        before = set(snapshot(Store.open("faulty")))
        if kind == "collect":
            trial_urls = tmp_path / f"urls-{trial}.txt"
            urls += serve_photos(web, f"/trial{trial}", trial_urls)
            cmd = [sys.executable, "-m", "dragonclf", "collect", "--dataset", "faulty", "--label", "tools",
                   "--urls", str(trial_urls), "--json"]
            delay = rng.uniform(1.0, 4.0)  # interpreter start is ~1 s; work follows
        elif kind == "edits":
            cmd = [sys.executable, "-c", EDIT_BURST, str(trial)]
            delay = rng.uniform(0.5, 2.5)
        else:
            cmd = [sys.executable, "-m", "dragonclf", "train", "--dataset", "faulty", "--mode",
                   rng.choice(["quick", "finetune"]), "--epochs", "1", "--size", "64", "--json", "--quiet"]
            delay = rng.uniform(2.5, 5.5)  # a training here takes ~6 s: import, features, fit, save
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed[kind] += 1
        proc.wait(timeout=60)
        assert_consistent(home, before)
    assert all(n >= 3 for n in killed.values()), killed  # the kills really landed mid-work

    # Interrupted work resumes: collecting every URL again completes without duplicates ...
    url_file = tmp_path / "urls.txt"
    url_file.write_text("\n".join(urls))
    out = subprocess.run([sys.executable, "-m", "dragonclf", "collect", "--dataset", "faulty", "--label", "tools",
                          "--urls", str(url_file), "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    store = assert_consistent(home, set())
    sources = [r.source for r in store.images(status=None) if r.origin == "url"]
    assert len(sources) == len(set(sources))
    fetched = Store.open("faulty").url_outcomes()
    assert set(fetched) >= set(urls)  # every URL reached a final answer
    # ... and a training started after the crashes finishes and is listed.
    out = subprocess.run([sys.executable, "-m", "dragonclf", "train", "--dataset", "faulty", "--mode", "quick",
                          "--size", "64", "--json", "--quiet"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]
    assert_consistent(home, set())
