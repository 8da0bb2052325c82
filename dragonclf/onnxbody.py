"""The pretrained body as a cached ONNX graph: embeddings and quick models without torch.

Importing torch and timm and building the body costs a fresh process seconds
on a small CPU, and torch's CPU forward is ~3x slower than ONNX Runtime's on
this model. So the body is exported once per (backbone, size) to
`cache_root()/onnx/<backbone>-<size>.onnx` (image batch -> pooled embedding;
this step alone needs torch), and from then on:

- `OrtBody(backbone, size)(batch)` embeds a preprocessed batch with ONNX Runtime;
- `write_quick_model(backbone, size, weight, bias, path)` appends the quick
  model's linear head and a softmax to a copy of the body graph (`onnx_head`,
  on the file's bytes), which gives the same model.onnx (image ->
  probabilities) as exporting the torch modules.

The embeddings agree with torch's to ~1e-5 (float32 rounding), so the cache
may mix both.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from dragonclf import config

_lock = threading.Lock()
_sessions: dict[tuple[str, int, bool], "OrtBody"] = {}


def body_path(backbone: str, size: int) -> Path:
    return config.cache_root() / "onnx" / f"{backbone}-{size}.onnx"


def ensure_body(backbone: str, size: int) -> Path:
    """The body's ONNX file, exported from torch the first time (written whole, then renamed)."""
    path = body_path(backbone, size)
    if path.is_file():
        return path
    import torch

    from dragonclf import backbones

    body = backbones.create_body(backbone).eval().float().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(body, torch.zeros(1, 3, size, size), tmp, dynamo=False, input_names=["image"],
                              output_names=["embedding"], opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def session_options(threads: int | None = None):
    """ONNX Runtime's options (one thread per core unless `threads` caps the session's pool)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Worker threads spin between the operators of one run (a 224-px image: 5.0 ms, against 6.6 ms when
    # they sleep and are woken for every operator) and stop the moment the run returns: left spinning
    # between runs they burnt three times the CPU of the work itself, which on a shared 2-core machine
    # (a free Space) slowed everyone else. Measured in bench/RESULTS.md, "Predict latency".
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


def providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


MINI_BATCH = 4  # images per run of the body on a CPU (see OrtBody)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OrtBody:
    """Embeds (N, 3, size, size) float32 batches: (N, features).

    On a CPU a batch runs as mini-batches of `MINI_BATCH` images on single-threaded
    runs, one per core at a time (one session: ONNX Runtime runs it from several
    threads at once). Measured on the 2-core machine (bench/RESULTS.md, "Quick path
    profile"): 10.3 ms of CPU per image this way against 14.0 ms for batches of 32
    over the session's own thread pool (32 images' activations do not stay in the
    cache), and about 25% less wall time. `threads` (a worker of `embed_pool`): the
    session's own pool, the mini-batches one after another. With CUDA a batch runs whole.
    """

    def __init__(self, backbone: str, size: int, threads: int | None = None, int8: bool = False):
        import onnxruntime as ort

        provs = providers()
        self.cuda = "CUDAExecutionProvider" in provs
        workers = 1 if (self.cuda or threads) else cores()
        path = ensure_int8_body(backbone, size) if int8 else ensure_body(backbone, size)
        self.session = ort.InferenceSession(str(path), session_options(threads or (1 if workers > 1 else None)),
                                            providers=provs)
        self.input_name = self.session.get_inputs()[0].name
        self.pool = None
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor  # its threads start on first use

            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="dragonclf-ort")

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if self.cuda or len(x) <= MINI_BATCH:
            return self.run(x)
        parts = [x[i:i + MINI_BATCH] for i in range(0, len(x), MINI_BATCH)]
        return np.concatenate(list(self.pool.map(self.run, parts) if self.pool else map(self.run, parts)))


def get_body(backbone: str, size: int, int8: bool = False) -> OrtBody:
    """The body's session, made once per process; `int8`: the quantised body (see `ensure_int8_body`)."""
    with _lock:
        key = (backbone, size, int8)
        if key not in _sessions:
            _sessions[key] = OrtBody(backbone, size, int8=int8)
        return _sessions[key]


def write_quick_model(backbone: str, size: int, weight: np.ndarray, bias: np.ndarray, path: Path) -> None:
    """model.onnx for the quick model: the cached body, then Gemm(weight, bias) and Softmax -> "probs"."""
    _append_head(ensure_body(backbone, size), weight, bias, path)


def _append_head(body: Path, weight: np.ndarray, bias: np.ndarray, path: Path) -> None:
    from dragonclf.onnx_head import append_head

    path.write_bytes(append_head(body.read_bytes(), weight, bias))


def int8_body_path(backbone: str, size: int) -> Path:
    return config.cache_root() / "onnx" / f"{backbone}-{size}.int8.onnx"


def ensure_int8_body(backbone: str, size: int) -> Path:
    """The body quantised to int8 once, calibrated on 32 of the bundled demo photos (generic natural images)."""
    path = int8_body_path(backbone, size)
    if path.is_file():
        return path
    from dragonclf import backbones, quantize

    b = backbones.get_backbone(backbone)
    photos = sorted((config.BUNDLED_DATASETS / config.DEMO_DATASET).rglob("*.jpg"))
    calib = photos[:: max(1, len(photos) // 32)][:32]
    if not calib:
        from dragonclf.errors import DragonError

        raise DragonError("No bundled demo photos to calibrate an int8 body with; serving float32.")
    quantize.quantize(ensure_body(backbone, size), path, calib, size, b.mean, b.std, input_name="image")
    return path


def write_quick_variant(backbone: str, size: int, weight, bias, path: Path, int8: bool) -> None:
    """`write_quick_model` on the float32 body, or (int8) on the quantised body: the head stays float32."""
    if not int8:
        write_quick_model(backbone, size, weight, bias, path)
        return
    _append_head(ensure_int8_body(backbone, size), weight, bias, path)
