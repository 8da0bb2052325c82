"""Train, Evaluate and Predict through the app's named endpoints (gradio_client)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from conftest import jpeg_bytes
from dragonclf.modelstore import list_models
from dragonclf.store import Store


@pytest.fixture
def trained(client):
    """The demo dataset with a quick model, trained through the Train endpoint."""
    Store.open("demo")
    out = client.predict("demo", "quick", "efficientnet_lite0", 1, "", None, "one_cycle", True, 128, 32, 0.2,
                         "default", api_name="/train")
    assert "Done" in out[0] and "validation accuracy" in out[0]
    models = list_models("demo")
    assert len(models) == 1 and models[0]["mode"] == "quick"
    return models[0]


def test_train_evaluate_predict_export(client, trained, photo_files, tmp_path):
    ev = client.predict("demo", trained["id"], False, api_name="/evaluate")
    summary, cm_plot, numbers, per_class = ev[0], ev[1], ev[2], ev[3]
    assert "validation images" in summary and "accuracy" in summary
    assert cm_plot  # the confusion-matrix figure came back
    n_valid = len(Store.open("demo").images(split="valid"))
    counts = numbers["data"]
    assert sum(sum(row[1:]) for row in counts) == n_valid  # every validation image lands in one cell
    assert {row[0] for row in per_class["data"]} == {"fishes", "monuments", "renewable", "tools"}

    photo = photo_files["tools"][-1]
    label, answered = client.predict(handle_file(str(photo)), "demo", trained["id"], 3, 0, api_name="/predict")
    assert label["label"] == "tools" and trained["id"] in answered
    assert len(label["confidences"]) == 3
    assert abs(sum(c["confidence"] for c in label["confidences"])) <= 1.0 + 1e-6

    exported, said = client.predict("demo", trained["id"], "onnx", api_name="/export_model")
    assert "README" in said
    assert str(exported).endswith("-onnx.zip") or exported.get("path", "").endswith("-onnx.zip")
    # the zip explains itself: a README whose example runs with onnxruntime alone and gets the right answer
    import zipfile

    unpacked = tmp_path / "onnx"
    with zipfile.ZipFile(exported if isinstance(exported, str) else exported["path"]) as z:
        z.extractall(unpacked)
    example = (unpacked / "README.md").read_text().split("```python")[1].split("```")[0]
    shutil.copy(photo, unpacked / "picture.jpg")
    (unpacked / "example.py").write_text(example)
    out = subprocess.run([sys.executable, "example.py"], cwd=unpacked, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", "")}, check=True).stdout
    assert "'tools'" in out.split(")")[0], out  # the first guess


def test_predict_bad_inputs_are_clear_messages(client, trained, tmp_path):
    gray = tmp_path / "gray.png"
    from PIL import Image

    Image.new("L", (300, 200), 128).save(gray)
    assert client.predict(handle_file(str(gray)), "demo", "", 2, 0, api_name="/predict")[0]["label"]
    tiny = tmp_path / "tiny.jpg"
    tiny.write_bytes(jpeg_bytes(size=(4, 4)))
    assert client.predict(handle_file(str(tiny)), "demo", "", 2, 0, api_name="/predict")[0]["label"]
    with pytest.raises(AppError, match="no trained model|not .*trained|Train"):
        Store.open("empty", create=True)
        client.predict(handle_file(str(gray)), "empty", "", 2, api_name="/predict")
    with pytest.raises(AppError, match="only from the app's models folder|No such model"):
        client.predict(handle_file(str(gray)), "demo", "/etc/passwd", 2, api_name="/predict")


def test_predict_refuses_non_images_and_huge_images_with_a_message(client, trained, tmp_path):
    from httpserver import png_bomb

    fake = tmp_path / "holiday.jpg"
    fake.write_text("<html>not a picture</html>")
    with pytest.raises(AppError, match="not a readable image|not an image"):
        client.predict(handle_file(str(fake)), "demo", "", 2, api_name="/predict")
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bomb(12000))  # 144 megapixels in a few hundred kB
    with pytest.raises(AppError, match="too large"):
        client.predict(handle_file(str(huge)), "demo", "", 2, api_name="/predict")
    palette = tmp_path / "palette.png"  # not RGB: must reach our loader, not be converted by Gradio first
    from PIL import Image

    Image.new("P", (200, 200), 3).save(palette)
    assert client.predict(handle_file(str(palette)), "demo", "", 2, 0, api_name="/predict")[0]["label"]


def test_training_an_empty_dataset_is_a_clear_message(client):
    Store.open("nothing", create=True)
    with pytest.raises(AppError) as e:
        client.predict("nothing", "quick", "efficientnet_lite0", 1, "", None, "one_cycle", True, 128, 32, 0.2,
                       "default", api_name="/train")
    assert "Traceback" not in str(e.value) and "nothing" in str(e.value)


def test_predict_batch_answers_each_file_and_names_the_bad_ones(client, trained, photo_files, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("shopping list")
    files = [handle_file(str(photo_files["fishes"][0])), handle_file(str(photo_files["tools"][0])),
             handle_file(str(fake))]
    table, said = client.predict(files, "demo", trained["id"], api_name="/predict_batch")
    assert f"2 predicted by `{trained['id']}`" in said and "1 could not be read" in said
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert set(rows) == {photo_files["fishes"][0].name, photo_files["tools"][0].name, "notes.jpg"}
    assert rows[photo_files["fishes"][0].name]["label"] == "fishes"
    assert rows[photo_files["tools"][0].name]["label"] == "tools"
    assert rows["notes.jpg"]["label"] == "" and "not a readable image" in rows["notes.jpg"]["error"]


def test_lr_find_and_augmentation_preview_endpoints(client):
    fig, suggestion, _ = client.predict("demo", "efficientnet_lite0", 64, 16, "default", 0.2, api_name="/lr_find")
    # A plot and a learning rate inside the sweep (from 1e-7; the fallback may give a tenth of that): on the
    # warm head's nearly flat curve the valley lands anywhere from 3e-7 to 3e-4 from one sweep to the next.
    assert fig and 1e-8 <= float(suggestion) < 1
    preview, said = client.predict("demo", "strong", 64, 3, api_name="/preview_augmentation")
    assert "#3" in said and "strong" in said
    assert preview and preview.get("type") == "matplotlib"


def test_stop_train_ends_a_fine_tune_cleanly(client):
    import time

    job = client.submit("demo", "finetune", "efficientnet_lite0", 30, "", None, "one_cycle", True, 64, 16, 0.2,
                        "none", api_name="/train")
    deadline = time.time() + 180
    while time.time() < deadline and not job.done():
        outputs = job.outputs()  # (status, epoch table, loss chart, models) per yield
        if outputs and outputs[-1][2] is not None:  # an epoch finished: stop in the middle of the next
            break
        time.sleep(0.2)
    assert not job.done(), "the 30-epoch training ended before Stop"
    assert "Stopping" in client.predict(api_name="/stop_train")
    status = job.result(timeout=120)[0]
    assert status.startswith("**Stopped**"), status
    finetuned = [m for m in list_models("demo") if m["mode"] == "finetune"]
    assert len(finetuned) == 1 and finetuned[0]["stopped_early"]  # the complete epochs were kept
    meta = json.loads((Path(finetuned[0]["path"]) / "model.json").read_text())
    assert 1 <= meta["epochs_completed"] < 30


def test_rescan_adopts_an_image_dropped_into_a_label_folder(client, tmp_path):
    import numpy as np
    from PIL import Image

    store = Store.open("demo")
    before = {r.id for r in store.images(label="tools")}
    dropped = store.root / store.label("tools").folder / "from-my-phone.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(dropped)  # a picture new to the set
    message = client.predict("demo", api_name="/rescan")
    assert message.startswith("Rescan: 1 files adopted"), message
    after = Store.open("demo")
    new = [r for r in after.images(label="tools") if r.id not in before]
    assert len(new) == 1 and new[0].path.is_file() and new[0].path.suffix == ".jpg"
    assert after.check()["ok"]


def test_a_path_as_dataset_or_a_glob_as_model_touches_nothing_and_shows_no_server_path(client, home, tmp_path):
    """/predict with an empty model lists the dataset's models: a path there once reached outside the models
    folder, where stale-staging cleanup deleted `.tmp-*` folders; a model name went into a glob."""
    from PIL import Image

    outside = tmp_path / "outside"
    (outside / ".tmp-precious").mkdir(parents=True)
    (outside / ".tmp-precious" / "data.txt").write_text("keep me")
    gray = tmp_path / "gray.png"
    Image.new("L", (64, 64), 128).save(gray)
    for dataset in (str(outside), f"../../{outside.name}", "/", "demo/../../x"):
        with pytest.raises(AppError) as e:
            client.predict(handle_file(str(gray)), dataset, "", 2, api_name="/predict")
        assert str(tmp_path) not in str(e.value) and "Traceback" not in str(e.value)
    assert (outside / ".tmp-precious" / "data.txt").read_text() == "keep me"
    Store.open("demo")
    for model in ("*", "*/*", "[a-z]*", "2026*"):
        with pytest.raises(AppError, match="not a model id"):
            client.predict(handle_file(str(gray)), "demo", model, 2, api_name="/predict")
