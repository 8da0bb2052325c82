"""An int8 variant of a model's ONNX graph, for faster answers on a CPU.

`quantize_static` (ONNX Runtime's own tool) with per-channel int8 weights and
uint8 activations (QOperator format: fused QLinearConv kernels), calibrated on
a few of the model's own training images. `choose_variant` scores both graphs
on the validation split and keeps int8 only when it is no less accurate than
float32 by more than `tolerance`; model.json's `files.onnx` then names it and
`variant` says which it is and why.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from dragonclf.preprocess import load_image, to_array

INT8_FILE = "model.int8.onnx"


def quantize(src: Path, dest: Path, calib_paths, size: int, mean, std, input_name: str = "image") -> None:
    """Write an int8 copy of `src` at `dest`, calibrated on `calib_paths` (images)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    batches = [to_array(load_image(p), size, mean, std)[None] for p in calib_paths]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    try:
        quantize_static(str(src), tmp, Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
        for extra in Path(tmp).parent.glob(Path(tmp).name + "*"):  # calibration leftovers, if any
            extra.unlink(missing_ok=True)


def accuracy(onnx_path: Path, paths, labels_true, labels, size, mean, std) -> float:
    import onnxruntime as ort

    if not paths:
        return float("nan")
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.stack([to_array(load_image(p), size, mean, std) for p in paths])
    p = np.concatenate([s.run(None, {"image": x[i:i + 32]})[0] for i in range(0, len(x), 32)])
    return float(np.mean([labels[i] == t for i, t in zip(p.argmax(1), labels_true)]))


def choose_variant(folder: Path, items, labels, size, mean, std, tolerance: float = 0.01,
                   n_calib: int = 32) -> dict:
    """Quantise folder/model.onnx, score both on the valid items, and say which to serve.

    Returns {"onnx": file to serve, "variant": "int8" | "float32", "valid_accuracy": {...}, "why": ...}.
    """
    train = [it for it in items if it.split == "train"]
    valid = [it for it in items if it.split == "valid"]
    step = max(1, len(train) // n_calib)
    calib = [it.path for it in train[::step][:n_calib]]
    fp32 = folder / "model.onnx"
    int8 = folder / INT8_FILE
    quantize(fp32, int8, calib, size, mean, std)
    vp, vl = [it.path for it in valid], [it.label for it in valid]
    return pick(accuracy(fp32, vp, vl, labels, size, mean, std), accuracy(int8, vp, vl, labels, size, mean, std),
                tolerance)


def pick(a32: float, a8: float, tolerance: float = 0.01) -> dict:
    """Which graph to serve, given both validation accuracies (NaN: no validation images)."""
    scores = {"float32": a32, "int8": a8}
    if not (np.isfinite(a32) and np.isfinite(a8)):
        return {"onnx": "model.onnx", "variant": "float32", "valid_accuracy": scores,
                "why": "no validation images to check the int8 variant against; serving float32"}
    if a8 >= a32 - tolerance:
        return {"onnx": INT8_FILE, "variant": "int8", "valid_accuracy": scores,
                "why": f"int8 scores {a8:.3f} on the validation split vs {a32:.3f} in float32"}
    return {"onnx": "model.onnx", "variant": "float32", "valid_accuracy": scores,
            "why": f"int8 lost accuracy on the validation split ({a8:.3f} vs {a32:.3f}); serving float32"}
