"""Train, Evaluate and Predict through the app's named endpoints (gradio_client)."""

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
    label = client.predict(handle_file(str(photo)), "demo", trained["id"], 3, api_name="/predict")
    assert label["label"] == "tools"
    assert len(label["confidences"]) == 3
    assert abs(sum(c["confidence"] for c in label["confidences"])) <= 1.0 + 1e-6

    exported = client.predict("demo", trained["id"], "onnx", api_name="/export_model")
    assert str(exported).endswith("-onnx.zip") or exported.get("path", "").endswith("-onnx.zip")


def test_predict_bad_inputs_are_clear_messages(client, trained, tmp_path):
    gray = tmp_path / "gray.png"
    from PIL import Image

    Image.new("L", (300, 200), 128).save(gray)
    assert client.predict(handle_file(str(gray)), "demo", "", 2, api_name="/predict")["label"]
    tiny = tmp_path / "tiny.jpg"
    tiny.write_bytes(jpeg_bytes(size=(4, 4)))
    assert client.predict(handle_file(str(tiny)), "demo", "", 2, api_name="/predict")["label"]
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
    assert client.predict(handle_file(str(palette)), "demo", "", 2, api_name="/predict")["label"]


def test_training_an_empty_dataset_is_a_clear_message(client):
    Store.open("nothing", create=True)
    with pytest.raises(AppError) as e:
        client.predict("nothing", "quick", "efficientnet_lite0", 1, "", None, "one_cycle", True, 128, 32, 0.2,
                       "default", api_name="/train")
    assert "Traceback" not in str(e.value) and "nothing" in str(e.value)
