"""Fine-tuning over real photos: model folders, progress, Stop, one training at a time, bad datasets."""

from __future__ import annotations

import json
import threading

import pytest
from matplotlib.figure import Figure

from dragonclf import config, lr_find, modelstore, settings, train
from dragonclf.errors import DragonError
from dragonclf.predict import Predictor
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture


def _leftovers(dataset="photos"):
    """What a training left in the models folder besides finished models and the (free) lock file."""
    d = config.models_root() / dataset
    return [p.name for p in d.iterdir() if p.name != ".train.lock"] if d.is_dir() else []


def _lock_is_free(dataset="photos") -> bool:
    try:
        with modelstore.training_lock(dataset):
            return True
    except DragonError:
        return False


def test_fine_tune_writes_a_complete_listed_model(ml_home):
    items = photo_items(per_label=10)
    rows, fractions = [], []
    r = train.fine_tune(items, dataset="photos", epochs=2, size=SIZE, batch_size=8, schedule="sgdr",
                        on_epoch=rows.append, progress=lambda f, m: fractions.append(f))
    assert [row["epoch"] for row in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "valid_loss", "accuracy", "error_rate"}
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 5
    assert {p.name for p in r.model_dir.iterdir()} >= {"export.pkl", "model.onnx", "model.json"}
    meta = json.loads((r.model_dir / "model.json").read_text())
    assert meta["dataset"] == "photos" and meta["mode"] == "finetune" and meta["backbone"] == "efficientnet_lite0"
    assert meta["input_size"] == SIZE and meta["mean"] == [0.5, 0.5, 0.5] and len(meta["history"]) == 2
    # The weights kept are the best epoch's on the validation split (0: the warm-started start).
    kept = r.start if r.best_epoch == 0 else rows[r.best_epoch - 1]
    assert meta["metrics"]["accuracy"] == pytest.approx(kept["accuracy"], abs=1e-6)
    listed = train.list_models("photos")
    assert [m["id"] for m in listed] == [r.model_dir.name]
    assert listed[0]["metrics"]["accuracy"] == meta["metrics"]["accuracy"] and listed[0]["created"]
    assert _lock_is_free()


def test_small_cnn_trains_from_scratch_and_predicts(ml_home, monkeypatch):
    # As under `accelerate launch --mixed_precision fp16` on a machine without a GPU.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    items = photo_items(per_label=6)
    r = train.fine_tune(items, "small_cnn", dataset="photos", epochs=1, size=SIZE, batch_size=8)
    assert r.mode == "scratch"
    probs = Predictor(r.model_dir).predict_image(items[0].path)
    assert len(probs) == 4
    assert any("fp16 needs a CUDA GPU" in w for w in r.warnings)
    assert json.loads((r.model_dir / "model.json").read_text())["params"]["mixed_precision"] == "no"


# ---- mixed precision, SGDR, discriminative learning rates ----------------------

@pytest.mark.parametrize("requested,accelerate,cuda,want", [
    (None, None, True, "fp16"),  # the default on a GPU
    (None, None, False, "no"),  # and on a CPU
    (None, "bf16", True, "bf16"),  # accelerate launch --mixed_precision bf16
    (None, "no", True, "no"),  # accelerate launch --mixed_precision no
    ("auto", "bf16", True, "bf16"),
    ("fp16", "no", True, "fp16"),  # our --mixed-precision wins over accelerate's
    ("no", None, True, "no"),
])
def test_mixed_precision_follows_the_request_then_accelerate_then_the_device(monkeypatch, requested, accelerate,
                                                                             cuda, want):
    if accelerate is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", accelerate)
    assert settings.choose_precision(requested, cuda=cuda) == (want, None)


def test_mixed_precision_on_a_cpu_or_unknown_is_explained(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    precision, warning = settings.choose_precision("bf16")
    assert precision == "no" and "bf16 needs a CUDA GPU" in warning
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(DragonError, match="'fp8' \\(from accelerate's mixed_precision\\) is not supported"):
        settings.choose_precision(None, cuda=True)


def test_the_chosen_precision_adds_fastais_mixed_precision_callback(ml_home):
    from fastai.callback.fp16 import AMPMode, MixedPrecision

    items = photo_items(per_label=4)
    labels = sorted({it.label for it in items})
    for precision, mode in (("no", None), ("fp16", AMPMode.FP16)):
        learn = train.build_learner(items, labels, "small_cnn", SIZE, 8, "none", precision=precision)
        found = [cb.amp_mode for cb in learn.cbs if isinstance(cb, MixedPrecision)]
        assert found == ([mode] if mode else [])


def test_cycle_position_restarts_exactly_at_each_epoch():
    # fastai's pos = k/n: k/n*n lands a hair under k for some n (1/49*49 < 1), which used to start that
    # epoch's cycle at its lowest learning rate instead of its highest.
    for n in range(1, 120):
        for k in range(n):
            assert train.cycle_position(k / n, n) < 1e-9, (k, n)
            assert 0.4 < train.cycle_position((k + 0.5) / n, n) < 0.6
    assert train.cycle_position(1.0, 3) == 0.999


def test_sgdr_restarts_the_learning_rate_every_epoch(ml_home):
    r = train.fine_tune(photo_items(per_label=10), dataset="photos", epochs=3, size=SIZE, batch_size=4,
                        schedule="sgdr", lr=1e-3, save=False)
    head = [group[-1] for group in r.lrs]
    per_epoch = len(head) // 3
    assert per_epoch >= 4 and len(head) == 3 * per_epoch
    cycles = [head[k * per_epoch:(k + 1) * per_epoch] for k in range(3)]
    for cycle in cycles:
        assert cycle[0] == pytest.approx(1e-3, rel=1e-6)  # each epoch starts at the full rate
        assert all(a > b for a, b in zip(cycle, cycle[1:]))  # and anneals down
        assert cycle[-1] < 0.5e-3
    for prev, nxt in zip(cycles, cycles[1:]):
        assert nxt[0] > 2 * prev[-1]  # the restart


@pytest.mark.parametrize("discriminative", [True, False])
def test_discriminative_rates_slow_the_body_down(ml_home, discriminative):
    r = train.fine_tune(photo_items(per_label=6), dataset="photos", epochs=1, size=SIZE, batch_size=4,
                        discriminative=discriminative, lr_mult=100, save=False)
    assert r.lrs and all(len(groups) >= 2 for groups in r.lrs)  # body and head groups
    for groups in r.lrs:
        body, head = groups[0], groups[-1]
        if discriminative:
            assert body == pytest.approx(head / 100, rel=1e-6)
        else:
            assert groups == pytest.approx([head] * len(groups))


def test_stop_in_the_first_epoch_saves_nothing(ml_home):
    stop = threading.Event()
    with pytest.raises(train.Cancelled, match="no model was saved"):
        train.fine_tune(photo_items(per_label=8), dataset="photos", epochs=2, size=SIZE, batch_size=4,
                        progress=lambda f, m: stop.set() if "batch 2/" in m else None, cancel=stop)
    assert train.list_models("photos") == []
    assert _leftovers() == [] and _lock_is_free()  # no temp folder, the lock released


def test_stop_mid_epoch_keeps_the_last_complete_epoch(ml_home):
    stop = threading.Event()
    r = train.fine_tune(photo_items(per_label=8), dataset="photos", epochs=3, size=SIZE, batch_size=4,
                        progress=lambda f, m: stop.set() if m.startswith("Epoch 2/") and "batch 2/" in m else None,
                        cancel=stop)
    assert r.stopped_early and len(r.history) == 1
    [listed] = train.list_models("photos")
    assert listed["stopped_early"] and listed["id"] == r.model_dir.name
    meta = json.loads((r.model_dir / "model.json").read_text())
    assert meta["epochs_completed"] == 1
    assert Predictor(r.model_dir).predict_image(photo_items(per_label=1)[0].path)
    assert [n for n in _leftovers() if n.startswith(".")] == []


def test_a_second_training_of_the_same_dataset_is_refused(ml_home):
    items = photo_items(per_label=8)
    started, release = threading.Event(), threading.Event()

    def progress(f, m):
        started.set()
        release.wait(60)

    t = threading.Thread(target=lambda: train.fine_tune(items, dataset="photos", epochs=1, size=SIZE, batch_size=8,
                                                        progress=progress))
    t.start()
    try:
        assert started.wait(120)
        with pytest.raises(DragonError, match="already running"):
            train.fine_tune(items, dataset="photos", epochs=1, size=SIZE)
        # Another dataset may train meanwhile (only the lock is checked here).
        with modelstore.training_lock("other"):
            pass
    finally:
        release.set()
        t.join(300)
    assert len(train.list_models("photos")) == 1


# ---- the training lock and unfinished model folders, across real processes ----

HOLD_LOCK = """
import sys, time
from dragonclf import modelstore
with modelstore.{what}:
    print("held", flush=True)
    time.sleep(600)
"""


def _hold_in_child(what: str):
    """A separate Python process that enters `modelstore.<what>` and waits there until killed."""
    import subprocess
    import sys

    from ml_fixtures import REPO

    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(what=what)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.strip() == "held", child.stderr.read()[-2000:]
    return child


def _kill_9(child) -> None:
    import signal

    child.send_signal(signal.SIGKILL)
    child.wait(30)


def test_a_training_in_another_process_is_refused_until_it_is_killed(ml_home):
    child = _hold_in_child('training_lock("photos")')
    try:
        with pytest.raises(DragonError, match=f"already running \\(process {child.pid}\\)"):
            with modelstore.training_lock("photos"):
                pass
        with modelstore.training_lock("other"):  # another dataset is not blocked
            pass
    finally:
        _kill_9(child)
    # kill -9 runs no cleanup code, yet the kernel released the lock with the process.
    with modelstore.training_lock("photos"):
        pass


def test_a_lock_file_naming_a_live_pid_does_not_block_a_restarted_app(ml_home):
    """After a container restart the old lock file may name a PID that is alive again (even our own)."""
    import os

    d = config.models_root() / "photos"
    d.mkdir(parents=True)
    (d / ".train.lock").write_text(str(os.getpid()))
    with modelstore.training_lock("photos"):
        assert (d / ".train.lock").read_text() == str(os.getpid())


def _race(n: int, start_at: float, hold: float):
    """Try the lock at `start_at` (wall clock); hold it `hold` s if won. Returns "won" or "refused"."""
    import time

    time.sleep(max(0.0, start_at - time.time()))
    try:
        with modelstore.training_lock("photos"):
            time.sleep(hold)
            return "won"
    except DragonError:
        return "refused"


def test_many_threads_starting_together_exactly_one_trains(ml_home):
    import time
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(5):  # several rounds: the lock file exists from the second round on
        start_at = time.time() + 0.3
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda n, t=start_at: _race(n, t, 0.5), range(16)))
        assert sorted(outcomes) == ["refused"] * 15 + ["won"], outcomes


def test_many_processes_starting_together_exactly_one_trains(ml_home, tmp_path):
    import subprocess
    import sys
    import time

    from ml_fixtures import REPO

    code = (
        "import sys, time\n"
        "from dragonclf import modelstore\n"
        "from dragonclf.errors import DragonError\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "try:\n"
        "    with modelstore.training_lock('photos'):\n"
        "        time.sleep(1.5)\n"
        "        print('won')\n"
        "except DragonError:\n"
        "    print('refused')\n"
    )
    start_at = time.time() + 4  # every process has imported dragonclf by then
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start_at)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(12)]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["refused"] * 11 + ["won"], outcomes


def test_unfinished_model_folders_of_killed_trainings_are_cleaned_live_ones_kept(ml_home):
    d = config.models_root() / "photos"
    d.mkdir(parents=True)
    # Left by a kill -9 before staging folders had lock files: a half-written export.
    old = d / ".tmp-20260101-000000-finetune-mobilenet_v2-dead"
    old.mkdir()
    (old / "export.pkl").write_bytes(b"half a pickle")
    # A staging folder being written by another, live process.
    child = _hold_in_child('staging("photos", "20260101-000001-quick-efficientnet_lite0-live")')
    live = d / ".tmp-20260101-000001-quick-efficientnet_lite0-live"
    try:
        assert live.is_dir()
        assert train.list_models("photos") == []  # listing cleans
        assert not old.exists() and live.is_dir()
        with modelstore.training_lock("photos"):  # so does starting a training
            assert live.is_dir()
    finally:
        _kill_9(child)
    assert live.is_dir()  # kill -9: nothing of the child's own cleanup ran
    with modelstore.training_lock("photos"):
        assert not live.exists()
    assert _leftovers() == []


@pytest.mark.parametrize("case,msg", [
    ("empty", "no active images"), ("one label", "one label only"), ("no valid", "no validation images"),
])
def test_unlearnable_datasets_get_a_clear_message(ml_home, case, msg):
    if case == "empty":
        items = []
    elif case == "one label":
        items = photo_items(per_label=6, labels=["tools"])
    else:
        items = [it.__class__(it.id, it.path, it.label, it.sha256, "train") for it in photo_items(per_label=4)]
    with pytest.raises(DragonError, match=msg):
        train.fine_tune(items, dataset="photos", epochs=1, size=SIZE)
    assert train.list_models("photos") == []


def test_every_image_trashed_in_a_real_store(ml_home):
    from dragonclf.store import Store

    store = Store.open("demo")
    store.trash([r.id for r in store.images()])
    for mode in ("quick", "finetune"):
        with pytest.raises(DragonError, match="no active images"):
            train.train(store, mode, size=SIZE)


def test_store_glue_quick_model_on_the_demo_dataset(ml_home):
    from dragonclf.store import Store

    store = Store.open("demo")
    r = train.train(store, "quick", size=SIZE)
    assert r.dataset == "demo" and r.model_dir.parent.name == "demo"
    meta = json.loads((r.model_dir / "model.json").read_text())
    n_valid = len([row for row in store.images() if row.split == "valid"])
    assert meta["training_data"]["n_valid"] == n_valid and meta["training_data"]["n_images"] == len(store.images())
    assert train.list_models("demo")[0]["mode"] == "quick"


def test_lr_find_and_augmentation_preview_return_figures(ml_home):
    items = photo_items(per_label=6)
    fig, suggestion = lr_find.lr_find(items, dataset="photos", size=SIZE, batch_size=8, num_it=8)
    assert isinstance(fig, Figure) and 1e-7 < suggestion < 10
    for preset in train.AUGMENT_PRESETS:
        fig = lr_find.preview_augmentations(items, augment=preset, size=SIZE, n=4)
        assert isinstance(fig, Figure) and len(fig.axes) == 4
    with pytest.raises(DragonError, match="Unknown augmentation"):
        lr_find.preview_augmentations(items, augment="wild")


def test_mobilenet_and_small_cnn_pickles_load_in_a_fresh_process(ml_home):
    """Their export.pkl reference our own module-level code (arch constructor, SmallCNN)."""
    import subprocess
    import sys

    from ml_fixtures import REPO

    items = photo_items(per_label=6)
    dirs = [train.fine_tune(items, name, dataset="photos", epochs=1, size=SIZE, batch_size=8).model_dir
            for name in ("mobilenet_v2", "small_cnn")]
    code = (
        "import sys, json\n"
        "from fastai.learner import load_learner\n"
        "out = []\n"
        "for pkl in sys.argv[2:]:\n"
        "    learn = load_learner(pkl)\n"
        "    with learn.no_bar():\n"
        "        out.append([float(p) for p in learn.predict(sys.argv[1])[2]])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(items[0].path), *(str(d / "export.pkl") for d in dirs)],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for d, fastai_probs in zip(dirs, json.loads(proc.stdout.strip().splitlines()[-1])):
        mine = Predictor(d).predict_image(items[0].path)
        labels = json.loads((d / "model.json").read_text())["labels"]
        assert [mine[lab] for lab in labels] == pytest.approx(fastai_probs, abs=2e-3)
        # model.json says what loading it takes: these two name our own constructors.
        assert "dragonclf" in json.loads((d / "model.json").read_text())["pkl_needs"]


def test_a_hub_backbone_offline_fails_clearly_and_leaves_nothing(ml_home):
    with pytest.raises(DragonError, match="Choose an offline backbone: efficientnet_lite0, mobilenet_v2, small_cnn"):
        train.fine_tune(photo_items(per_label=4), "resnet18", dataset="photos", epochs=1, size=SIZE, warm_start=False)
    assert train.list_models("photos") == [] and _leftovers() == []


# ---- defaults sized for the machine ---------------------------------------------

@pytest.mark.parametrize("cuda", [False, True])
def test_default_settings_are_cpu_sized_without_cuda(monkeypatch, cuda):
    import torch

    from dragonclf.cli import build_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    d = settings.default_settings()
    if cuda:
        assert d == {"device": "cuda", "size": 224, "batch_size": 64, "epochs": 5}
    else:
        assert d == {"device": "cpu", "size": 224, "batch_size": 32, "epochs": 3}
    args = build_parser().parse_args(["train", "--dataset", "demo"])  # the CLI starts from the same values
    assert (args.epochs, args.batch_size) == (d["epochs"], d["batch_size"])


def test_the_train_tab_starts_from_the_cpu_defaults_here(client):
    """This machine has no CUDA: the running app's Train endpoint defaults to the CPU-sized settings."""
    api = client.view_api(print_info=False, return_format="dict")
    params = {p["parameter_name"]: p.get("parameter_default") for p in api["named_endpoints"]["/train"]["parameters"]}
    cpu = settings.default_settings(cuda=False)
    assert (params["epochs"], params["size"], params["batch_size"]) == (cpu["epochs"], cpu["size"], cpu["batch_size"])


def test_the_train_tab_offers_larger_defaults_on_a_gpu(monkeypatch):
    """The tab is built once at start: on a CUDA machine its fields start from the GPU settings."""
    from types import SimpleNamespace

    import gradio as gr
    import torch

    from ui import train_tab

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with gr.Blocks() as demo:
        train_tab.build(SimpleNamespace(dataset=gr.Dropdown(["demo"], value="demo"), trainings=[], model_lists=[]))
    by_label = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Number)}
    assert by_label["Epochs"].value == 5
    assert by_label["Image size (px)"].value == 224 and by_label["Batch size"].value == 64


@pytest.mark.parametrize("bad", [dict(epochs=10**9), dict(size=100_000), dict(batch_size=0), dict(batch_size=10**7),
                                 dict(valid_share=1.5), dict(freeze_epochs=-3), dict(lr=1e6)])
def test_numeric_settings_out_of_range_are_refused_before_any_work(bad):
    """Whatever a client sends past the browser's sliders is checked on the server."""
    from dragonclf import train as train_mod

    with pytest.raises(DragonError, match="must be between"):
        train_mod.train([], mode="finetune", **bad)
