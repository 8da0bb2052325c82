"""Prediction with an exported model through ONNX Runtime.

`Predictor` loads a model folder from the app's own models folder only (never a
file a user uploaded: see modelstore.resolve) and takes its preprocessing from
model.json, so the same code serves quick and fine-tuned models. ONNX Runtime
answers a single image several times faster than fastai's `learn.predict`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from dragonclf import modelstore, onnxbody
from dragonclf.errors import DragonError
from dragonclf.preprocess import load_image, to_array

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class Predictor:
    def __init__(self, model, dataset: str | None = None, variant: str | None = None):
        """`model`: a model folder (or its id) under the models folder.

        With `dataset`, a model trained on another dataset is refused. The graph
        run is the one model.json's `files.onnx` names (an int8 variant when
        training found it as accurate, see quantize.py); `variant` "float32" or
        "int8" asks for one explicitly.
        """
        import onnxruntime as ort

        self.model_dir = modelstore.resolve(model, dataset)
        self.meta = modelstore.read_meta(self.model_dir)
        if dataset is not None and self.meta.get("dataset") != dataset:
            raise DragonError(
                f"Model {self.model_dir.name} was trained on dataset {self.meta.get('dataset')!r}, not {dataset!r}."
            )
        files = self.meta.get("files") or {}
        name = {"float32": "model.onnx", "int8": "model.int8.onnx"}.get(variant or "", files.get("onnx") or "model.onnx")
        if "/" in name or "\\" in name or not name.endswith(".onnx"):
            raise DragonError(f"Model {self.model_dir.name}: model.json names an odd ONNX file {name!r}.")
        onnx_path = self.model_dir / name
        self.variant = "int8" if name == "model.int8.onnx" else "float32"
        if not onnx_path.is_file():
            raise DragonError(f"Model {self.model_dir.name} has no {name}; export it again.")
        try:
            self.session = ort.InferenceSession(str(onnx_path), onnxbody.session_options(),
                                                providers=onnxbody.providers())
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own non-exported error types
            raise DragonError(f"Model {self.model_dir.name}: {name} is corrupt or unreadable ({e}).") from e
        self.labels = list(self.meta["labels"])
        self.size = int(self.meta["input_size"])
        self.mean, self.std = self.meta["mean"], self.meta["std"]
        self.input_name = self.session.get_inputs()[0].name
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.labels):
            raise DragonError(f"Model {self.model_dir.name}: {name} has {n_out} outputs but model.json {len(self.labels)} labels.")

    def preprocess(self, src, flip: bool = False) -> np.ndarray:
        img = load_image(src, draft=self.size)
        if flip:
            from PIL import Image

            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_array(img, self.size, self.mean, self.std)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x.astype(np.float32)})[0]

    def probs(self, sources, tta: bool = False, batch_size: int = 32) -> np.ndarray:
        """(N, K) probabilities; with `tta`, averaged with the mirrored image."""
        sources = list(sources)
        out = []
        for start in range(0, len(sources), batch_size):
            chunk = sources[start:start + batch_size]
            x = np.stack([self.preprocess(s) for s in chunk])
            p = self.run(x)
            if tta:
                p = (p + self.run(x[..., ::-1].copy())) / 2
            out.append(p)
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict_image(self, src, top_k: int | None = None) -> dict[str, float]:
        """{label: probability}, most likely first."""
        p = self.run(self.preprocess(src)[None])[0]
        top_k = len(p) if not top_k else max(1, min(int(top_k), len(p)))  # whatever a client sent
        order = np.argsort(-p)[:top_k]
        return {self.labels[i]: float(p[i]) for i in order}

    def predict_paths(self, paths) -> list[dict]:
        """[{"path", "label", "probs"}] per file; an unreadable file gets {"path", "error"}."""
        results = []
        for path in paths:
            try:
                probs = self.predict_image(path)
            except DragonError as e:
                results.append({"path": str(path), "error": str(e)})
                continue
            results.append({"path": str(path), "label": next(iter(probs)), "probs": probs})
        return results

    def predict_folder(self, folder) -> list[dict]:
        folder = Path(folder)
        if not folder.is_dir():
            raise DragonError(f"No such folder: {folder}")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return self.predict_paths(files)


def predict(model, sources, dataset: str | None = None) -> list[dict]:
    """One-call convenience: load the model and predict files."""
    return Predictor(model, dataset).predict_paths(sources)


CACHED_MODELS = 8  # models kept loaded by load_predictor (an ONNX session each)
_cache: dict[tuple[str, str | None], tuple[float, Predictor]] = {}
_cache_lock = threading.Lock()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def load_predictor(model, dataset: str | None = None) -> Predictor:
    """A Predictor reused across calls (the app predicts many times with one model).

    Reloaded when model.json or one of its ONNX files changes on disk.
    """
    folder = modelstore.resolve(model, dataset)
    stamp = tuple(_mtime(folder / f) for f in ("model.json", "model.onnx", "model.int8.onnx"))
    if stamp[0] is None or stamp[1] is None:
        return Predictor(folder, dataset)  # raises the clear error for the missing file
    key = (str(folder), dataset)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, Predictor(folder, dataset))
            _cache.pop(key, None)
            while len(_cache) >= CACHED_MODELS:
                _cache.pop(next(iter(_cache)))  # the least recently loaded
            _cache[key] = hit
        return hit[1]
