"""Prediction through ONNX Runtime: matches fastai, refuses bad models and bad input clearly."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dragonclf import config
from dragonclf.errors import DragonError
from dragonclf.predict import Predictor
from ml_fixtures import REPO, install_model, ml_home, trained_models  # noqa: F401 - fixtures


@pytest.fixture
def quick(ml_home, trained_models):
    return install_model(trained_models["quick"].model_dir)


@pytest.fixture
def tuned(ml_home, trained_models):
    return install_model(trained_models["finetune"].model_dir)


def test_predicts_probabilities_for_every_label(quick, trained_models):
    p = Predictor(quick)
    item = next(it for it in trained_models["items"] if it.label == "tools")
    probs = p.predict_image(item.path)
    assert set(probs) == {"fishes", "monuments", "renewable", "tools"}
    assert abs(sum(probs.values()) - 1) < 1e-5
    assert list(probs.values()) == sorted(probs.values(), reverse=True)
    assert p.predict_image(Image.open(item.path)) == pytest.approx(probs, abs=1e-6)
    assert p.predict_image(item.path.read_bytes()) == pytest.approx(probs, abs=1e-6)


def test_onnx_matches_fastai_on_the_validation_images(tuned, trained_models):
    from fastai.learner import load_learner

    valid = [it for it in trained_models["items"] if it.split == "valid"][:12]
    learn = load_learner(tuned / "export.pkl")
    with learn.no_bar():
        dl = learn.dls.test_dl([it.path for it in valid])
        ref, _ = learn.get_preds(dl=dl)
    onnx = Predictor(tuned, variant="float32").probs([it.path for it in valid])
    np.testing.assert_allclose(onnx, ref.numpy(), atol=2e-3)
    assert (onnx.argmax(1) == ref.numpy().argmax(1)).all()


@pytest.mark.parametrize("which", ["quick", "tuned"])
def test_the_model_folder_says_which_variant_it_serves(which, quick, tuned, trained_models):
    folder = quick if which == "quick" else tuned
    meta = json.loads((folder / "model.json").read_text())
    v = meta["variant"]
    assert v["variant"] in ("int8", "float32") and v["why"] and set(v["valid_accuracy"]) == {"float32", "int8"}
    assert meta["files"]["onnx"] == ("model.int8.onnx" if v["variant"] == "int8" else "model.onnx")
    if v["variant"] == "int8":  # served only when no less accurate on the validation split (1 point)
        assert v["valid_accuracy"]["int8"] >= v["valid_accuracy"]["float32"] - 0.01
    assert Predictor(folder).variant == v["variant"]
    valid = [it.path for it in trained_models["items"] if it.split == "valid"][:12]
    p8, p32 = Predictor(folder, variant="int8").probs(valid), Predictor(folder, variant="float32").probs(valid)
    assert np.abs(p8 - p32).mean() < 0.05 and (p8.argmax(1) == p32.argmax(1)).mean() >= 0.9


def test_export_pkl_loads_with_plain_fastai_where_dragonclf_is_not_installed(tuned, trained_models, tmp_path):
    item = next(it for it in trained_models["items"] if it.split == "valid")
    code = (
        "import sys, json\n"
        "from fastai.learner import load_learner\n"
        "learn = load_learner(sys.argv[1])\n"
        "with learn.no_bar():\n"
        "    label, idx, probs = learn.predict(sys.argv[2])\n"
        "print(json.dumps({'label': str(label), 'probs': [float(p) for p in probs]}))\n"
    )
    # As in someone else's Space: dragonclf is not importable there (-I: no PYTHONPATH, no current directory).
    code = "import importlib.util\nassert importlib.util.find_spec('dragonclf') is None\n" + code
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", "-c", code, str(tuned / "export.pkl"), str(item.path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    mine = Predictor(tuned, variant="float32").predict_image(item.path)  # the graph fastai's weights became
    assert got["label"] == next(iter(mine))
    meta = json.loads((tuned / "model.json").read_text())
    np.testing.assert_allclose(got["probs"], [mine[lab] for lab in meta["labels"]], atol=2e-3)
    assert {"fastai", "timm", "torch"} <= set(meta["pkl_needs"]) and "dragonclf" not in meta["pkl_needs"]


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_odd_but_valid_images_are_predicted(quick, trained_models):
    p = Predictor(quick)
    rgb = Image.open(trained_models["items"][0].path).convert("RGB")
    for src in (rgb.convert("L"), _png(rgb.convert("L")), rgb.convert("RGBA"), rgb.resize((1, 1)),
                rgb.resize((3000, 2000)), np.asarray(rgb), np.asarray(rgb.convert("L")),
                np.asarray(rgb).astype(np.float32) / 255):
        probs = p.predict_image(src)
        assert len(probs) == 4 and abs(sum(probs.values()) - 1) < 1e-5


def test_non_images_and_bombs_are_refused_clearly(quick, tmp_path):
    p = Predictor(quick)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    Image.new("1", (10000, 6000)).save(huge)  # 60 Mpx but a tiny file
    for bad, msg in [(text, "not a readable image"), (b"\x89PNG\r\n\x1a\n broken", "not a readable image"),
                     (tmp_path / "missing.jpg", "No such image"), (huge, "too large"),
                     (np.zeros((0, 5, 3), np.uint8), "Not an image array"), (np.zeros((4, 4, 7)), "Not an image array")]:
        with pytest.raises(DragonError, match=msg):
            p.predict_image(bad)


def test_batch_prediction_over_a_folder_reports_bad_files(quick, trained_models, tmp_path):
    for it in trained_models["items"][:3]:
        shutil.copy(it.path, tmp_path / it.path.name)
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    results = Predictor(quick).predict_folder(tmp_path)
    assert len(results) == 4
    assert sum("error" in r for r in results) == 1
    assert all(set(r) == {"path", "label", "probs"} for r in results if "error" not in r)


def test_missing_or_corrupt_model_files(quick):
    served = json.loads((quick / "model.json").read_text())["files"]["onnx"]  # model.onnx or model.int8.onnx
    (quick / served).write_bytes(b"garbage")
    with pytest.raises(DragonError, match="corrupt"):
        Predictor(quick)
    (quick / served).unlink()
    with pytest.raises(DragonError, match=f"no {served}"):
        Predictor(quick)
    (quick / "model.json").write_text("{ not json")
    with pytest.raises(DragonError, match="corrupt"):
        Predictor(quick)
    (quick / "model.json").unlink()
    with pytest.raises(DragonError, match="model.json is missing"):
        Predictor(quick)
    with pytest.raises(DragonError, match="No such model"):
        Predictor(config.models_root() / "photos" / "nope")


def test_models_outside_the_models_folder_are_refused(quick, tmp_path):
    elsewhere = tmp_path / "uploaded"
    shutil.copytree(quick, elsewhere)
    with pytest.raises(DragonError, match="only from the app's models folder"):
        Predictor(elsewhere)
    with pytest.raises(DragonError, match="only from the app's models folder"):
        Predictor(quick / ".." / ".." / ".." / "..")


def test_a_model_from_another_dataset_is_refused(quick):
    assert Predictor(quick, dataset="photos").labels
    with pytest.raises(DragonError, match="trained on dataset 'photos', not 'dragons'"):
        Predictor(quick, dataset="dragons")


def test_load_predictor_reuses_and_reloads_on_change(quick):
    import os

    from dragonclf.predict import load_predictor

    a = load_predictor(quick)
    assert load_predictor(quick) is a
    st = (quick / "model.json").stat()
    os.utime(quick / "model.json", (st.st_atime, st.st_mtime + 5))
    assert load_predictor(quick) is not a


def test_a_big_jpeg_is_decoded_at_reduced_size_before_predicting(quick, tmp_path, monkeypatch):
    """A 24-megapixel photo is drafted (decoded at 1/4 scale), never held at full size."""
    from dragonclf import predict as predict_mod

    big = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (120, 80, 40)).save(big, quality=70)
    seen = []
    real_to_array = predict_mod.to_array
    monkeypatch.setattr(predict_mod, "to_array", lambda img, *a: seen.append(img.size) or real_to_array(img, *a))
    p = Predictor(quick)
    probs = p.predict_image(big)
    assert len(probs) == 4 and abs(sum(probs.values()) - 1) < 1e-5
    (w, h), = seen
    assert w * h <= 6000 * 4000 / 16 and min(w, h) >= 2 * p.size
