"""Distributed runs through `accelerate launch`: 2 CPU processes on loopback.

What users rely on: a 2-process fine-tune gives exactly one model like a
single-process run, that model predicts, the dataset is left as it was, and
no rank but 0 writes anything under DRAGONCLF_HOME (an audit hook in
tests/rank_audit watches rank 1). The distributed `embed` job fills the cache
with the same vectors a single process computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dragonclf import config
from dragonclf.store import Store

REPO = Path(__file__).resolve().parent.parent
AUDIT_SITE = Path(__file__).resolve().parent / "rank_audit"
SIZE = 64  # tiny images: the whole test runs in well under a minute on 2 cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], home: Path, audit: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """`accelerate launch` 2 processes of `python -m dragonclf ARGS`, rendezvous on 127.0.0.1."""
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(_free_port()), "-m", "dragonclf", *args]
    audit.mkdir(exist_ok=True)
    env = dict(os.environ, DRAGONCLF_HOME=str(home), DRAGONCLF_RANK_AUDIT=str(audit), MASTER_ADDR="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(AUDIT_SITE), str(REPO)]), HF_HUB_OFFLINE="1",
               CUDA_VISIBLE_DEVICES="")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"accelerate launch failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def rank1_log(audit: Path) -> list[str]:
    log = audit / "rank1.log"
    assert log.is_file(), "rank 1 never started (or the audit hook was not loaded)"
    lines = log.read_text().splitlines()
    assert lines and lines[0].startswith("start"), lines[:3]
    return lines[1:]


def dataset_snapshot(root: Path) -> dict:
    """The dataset as users see it: manifest tables and every file's content (not SQLite's -wal/-shm)."""
    con = sqlite3.connect(f"file:{root / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        tables = {t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}")))
                  for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("manifest.sqlite")}
    return {"tables": tables, "files": files}


@pytest.fixture
def demo_home(home):
    """The bundled demo installed into this test's DRAGONCLF_HOME, closed so other processes own it."""
    store = Store.open("demo")
    root = store.root
    store.close()
    return home, root


def test_two_process_finetune_makes_one_model_and_leaves_the_store_alone(demo_home, tmp_path):
    from dragonclf.modelstore import list_models
    from dragonclf.predict import Predictor

    home, root = demo_home
    before = dataset_snapshot(root)
    audit = tmp_path / "audit"
    r = launch(["train", "--dataset", "demo", "--mode", "finetune", "--epochs", "1", "--size", str(SIZE),
                "--batch-size", "16", "--quiet", "--json"], home, audit)

    out = json.loads(r.stdout)  # one JSON answer: only rank 0 prints
    models = list_models("demo")
    assert len(models) == 1, models
    assert Path(models[0]["path"]) == Path(out["model"])
    assert models[0]["mode"] == "finetune"
    meta = json.loads((Path(out["model"]) / "model.json").read_text())
    assert meta["input_size"] == SIZE and meta["epochs_completed"] == 1
    # Every validation image scored once: the gathered predictions are not duplicated across ranks.
    assert meta["metrics"]["n_valid"] == meta["training_data"]["n_valid"]
    assert out["accuracy"] > 0.5  # 4 classes: chance is 0.25
    # Scored before training, and never saved worse than that start.
    assert out["kept"] in ("start", "last") and out["verdict"] and out["best_epoch"] in (0, 1)
    assert out["accuracy"] >= out["start_accuracy"] - 1e-6

    store = Store.open("demo")
    rows = store.images()
    pred = Predictor(out["model"])
    answers = pred.predict_paths([rows[0].path, rows[-1].path])
    assert all(a["label"] in meta["labels"] for a in answers), answers
    store.close()

    assert dataset_snapshot(root) == before
    leftovers = [p.name for p in (config.models_root() / "demo").iterdir()
                 if p.name not in (Path(out["model"]).name, ".train.lock")]
    assert leftovers == [], leftovers  # no half-written .tmp- folder or its lock file

    events = rank1_log(audit)
    writes = [e for e in events if e.startswith("WRITE")]
    assert writes == [], writes[:10]
    # Rank 1 did its share of the training: it read image files itself.
    assert any(e.startswith("read") and e.endswith(".jpg") for e in events)


def test_distributed_embed_matches_a_single_process_and_only_rank_0_writes(demo_home, tmp_path):
    from dragonclf import backbones, embeddings
    from dragonclf.items import collect

    home, root = demo_home
    audit = tmp_path / "audit"
    r = launch(["embed", "--dataset", "demo", "--size", str(SIZE), "--batch-size", "8", "--quiet", "--json"],
               home, audit)
    out = json.loads(r.stdout)
    assert out["processes"] == 2 and out["embedded"] == out["images"] > 0

    events = rank1_log(audit)
    assert [e for e in events if e.startswith("WRITE")] == []
    assert any(e.startswith("read") and e.endswith(".jpg") for e in events)

    _, items = collect(Store.open("demo"))
    vf = embeddings.vectors("efficientnet_lite0", SIZE)
    shas = sorted({it.sha256 for it in items})
    found, X = vf.get(shas)
    assert found.all() and len(vf) == len(shas)  # every picture once, nothing else
    vf.close()
    cached = dict(zip(shas, X))
    # A resumed run finds nothing left to do, and a single process agrees with the shards.
    again = embeddings.embed_to_cache(items, size=SIZE)
    assert again["embedded"] == 0
    fresh = backbones.create_body("efficientnet_lite0")
    import torch
    from dragonclf.backbones import get_backbone
    from dragonclf.preprocess import load_image, to_array

    b = get_backbone("efficientnet_lite0")
    some = items[:6]
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([to_array(load_image(it.path), SIZE, b.mean, b.std) for it in some]))
        want = fresh(x).numpy()
    got = np.stack([cached[it.sha256] for it in some])
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)  # the cache keeps float16


def test_training_data_is_read_from_disk_batch_by_batch(demo_home):
    """Datasets larger than memory: building the DataLoaders decodes nothing; a batch opens its own files."""
    from dragonclf import items as items_mod
    from dragonclf.train import make_dls

    opened = []

    def watch(event, args):
        if event == "open" and str(args[0]).endswith(".jpg"):
            opened.append(str(args[0]))

    sys.addaudithook(watch)  # audit hooks cannot be removed; this one only appends to a list
    _, items = items_mod.collect(Store.open("demo"))
    opened.clear()
    dls = make_dls(items, items_mod.label_order(items), SIZE, 16)
    at_build = len(opened)  # fastai peeks at one item per split to set itself up
    xb, _ = dls.train.one_batch()
    assert at_build <= 2
    assert len(opened) - at_build == len(xb) == 16
