"""The quick path's shortcuts give what the long way gives: the head written onto the body's bytes,
the body run in mini-batches on several threads, the int8 check on the body's session."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from dragonclf import features, onnx_head, onnxbody
from dragonclf.predict import Predictor
from ml_fixtures import SIZE, ml_home, photo_items  # noqa: F401 - fixture


def _toy_body() -> bytes:
    """image (N, 3, 2, 2) -> Flatten -> "embedding" (N, 12): a body small enough to check by hand."""
    image = helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 3, 2, 2])
    emb = helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["batch", 12])
    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["embedding"], name="flat")], "body",
                              [image], [emb])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_the_head_written_onto_the_body_bytes_is_a_valid_model_that_computes_the_head():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(5, 12)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    data = onnx_head.append_head(_toy_body(), W, b)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["probs"]
    assert [n.op_type for n in model.graph.node] == ["Flatten", "Gemm", "Softmax"]
    out = model.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.shape.dim] == ["batch", 5]
    x = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    probs = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    z = x.reshape(4, 12) @ W.T + b
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    assert onnx_head.graph_output_names(data) == ["probs"]


def test_a_body_with_two_outputs_is_refused():
    model = onnx.load_from_string(_toy_body())
    model.graph.output.append(helper.make_tensor_value_info("image2", onnx.TensorProto.FLOAT, None))
    try:
        onnx_head.append_head(model.SerializeToString(), np.zeros((2, 12)), np.zeros(2))
    except ValueError as e:
        assert "2 outputs" in str(e)
    else:
        raise AssertionError("a body with two outputs was taken")


def test_mini_batches_on_threads_give_the_whole_batch_embeddings(ml_home):
    body = onnxbody.get_body("efficientnet_lite0", SIZE)
    x = np.random.default_rng(1).normal(size=(11, 3, SIZE, SIZE)).astype(np.float32)  # 11: a ragged last part
    np.testing.assert_allclose(body(x), body.run(x), rtol=1e-4, atol=1e-5)


def test_the_int8_check_scores_what_the_int8_graph_answers(ml_home):
    items = photo_items(per_label=12)
    r = features.fit_quick(items, dataset="photos", size=SIZE)
    meta = json.loads((r.model_dir / "model.json").read_text())
    valid = [it for it in items if it.split == "valid"]
    p8 = Predictor(r.model_dir, variant="int8").probs([it.path for it in valid])
    graph = float(np.mean([meta["labels"][i] == it.label for i, it in zip(p8.argmax(1), valid)]))
    assert meta["variant"]["valid_accuracy"]["int8"] == graph
