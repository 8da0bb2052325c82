"""The train / evaluate / export / predict commands on the bundled demo dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

from dragonclf.cli import main
from ml_fixtures import REPO, ml_home  # noqa: F401 - fixture


def _json(capsys, argv) -> tuple[int, object]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip().startswith(("{", "[")) else out)


def test_train_evaluate_export_predict(ml_home, capsys, tmp_path):
    env = dict(os.environ, DRAGONCLF_HOME=str(ml_home))
    proc = subprocess.run([sys.executable, "-m", "dragonclf", "train", "--dataset", "demo", "--mode", "quick",
                           "--size", "64", "--json", "--quiet"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert set(out) >= {"model", "backbone", "mode", "accuracy", "per_class", "seconds"}
    assert out["mode"] == "quick" and out["backbone"] == "efficientnet_lite0" and out["accuracy"] > 0.6
    assert set(out["per_class"]) == {"fishes", "monuments", "renewable", "tools"}
    model = out["model"]

    code, ev = _json(capsys, ["evaluate", "--model", model, "--json"])
    assert code == 0 and ev["accuracy"] == out["accuracy"]
    assert len(ev["confusion_matrix"]) == 4 and ev["top_losses"]

    code, ex = _json(capsys, ["export", "--model", model, "--format", "onnx", "--out", str(tmp_path), "--json"])
    assert code == 0 and os.path.getsize(ex["file"]) > 1_000_000 and ex["file"].endswith("-onnx.zip")
    with zipfile.ZipFile(ex["file"]) as z:  # what the Predict tab's Export gives: graph, labels, a README
        assert sorted(z.namelist()) == ["README.md", "model.json", "model.onnx"]
        assert json.loads(z.read("model.json"))["labels"]
    assert main(["export", "--model", model, "--format", "pkl", "--out", str(tmp_path)]) == 1
    assert "no export.pkl" in capsys.readouterr().err

    demo_img = next((REPO / "datasets" / "demo" / "tools").glob("*.jpg"))
    junk = tmp_path / "junk.jpg"
    junk.write_text("hello")
    code, preds = _json(capsys, ["predict", "--model", model, str(demo_img), str(junk), "--json"])
    assert code == 1  # one input was not an image
    assert preds[0]["path"] == str(demo_img) and set(preds[0]) == {"path", "label", "probs"}
    assert abs(sum(preds[0]["probs"].values()) - 1) < 1e-5 and "error" in preds[1]


def test_cli_errors_are_one_line(ml_home, capsys, tmp_path):
    assert main(["predict", "--model", str(tmp_path), "x.jpg"]) == 1
    assert "only from the app's models folder" in capsys.readouterr().err
    assert main(["train", "--dataset", "nope", "--json"]) == 1
    assert "no dataset named" in capsys.readouterr().err
