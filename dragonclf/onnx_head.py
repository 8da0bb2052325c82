"""A linear head and a softmax appended to an ONNX body graph, written without the onnx package.

A quick model's model.onnx is the cached body graph (image -> embedding) plus
Gemm(weight, bias) and Softmax -> "probs". Parsing and re-saving the 13 MB body
with `onnx` costs a fresh process about half a CPU second (importing onnx and
protobuf, then the whole message), so this module edits the serialised bytes
instead, following the protobuf wire format that ONNX files are written in:
ModelProto field 7 is the graph; in GraphProto, 1 is node, 5 initializer and
12 output. The graph's own outputs are dropped and the head's fields are
appended after the body's nodes and initializers; every other byte is copied.
`append_head(body_bytes, weight, bias)` gives what `onnx.helper` would build
(tests/test_quick_path.py loads it with onnx and ONNX Runtime).
"""

from __future__ import annotations

import numpy as np

MODEL_GRAPH = 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_OUTPUT = 1, 5, 12
FLOAT = 1  # TensorProto.FLOAT
ATTR_INT = 2  # AttributeProto.INT


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, at: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        byte = buf[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, at
        shift += 7


def _fields(buf: bytes):
    """(field number, start, end) of each top-level field of a serialised message, key included."""
    at = 0
    while at < len(buf):
        start = at
        key, at = _read_varint(buf, at)
        wire = key & 7
        if wire == 0:
            _, at = _read_varint(buf, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, at = _read_varint(buf, at)
            at += length
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in an ONNX file")
        yield key >> 3, start, at


def _payload(buf: bytes, start: int, end: int) -> bytes:
    """The bytes of a length-delimited field, without its key and length."""
    _, at = _read_varint(buf, start)
    _, at = _read_varint(buf, at)
    return buf[at:end]


def _ld(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _tensor(name: str, array: np.ndarray) -> bytes:  # TensorProto: dims 1, data_type 2, name 8, raw_data 9
    a = np.ascontiguousarray(array, dtype="<f4")
    return (b"".join(_int(1, d) for d in a.shape) + _int(2, FLOAT) + _ld(8, name.encode())
            + _ld(9, a.tobytes()))


def _node(op: str, inputs: list[str], output: str, name: str, attr: str, value: int) -> bytes:
    # NodeProto: input 1, output 2, name 3, op_type 4, attribute 5 (AttributeProto: name 1, i 3, type 20)
    attribute = _ld(1, attr.encode()) + _int(3, value) + _int(20, ATTR_INT)
    return (b"".join(_ld(1, i.encode()) for i in inputs) + _ld(2, output.encode()) + _ld(3, name.encode())
            + _ld(4, op.encode()) + _ld(5, attribute))


def _float_output(name: str, dims: list) -> bytes:
    # ValueInfoProto(name 1, type 2) > TypeProto(tensor_type 1) > Tensor(elem_type 1, shape 2)
    # > TensorShapeProto(dim 1) > Dimension(dim_value 1 | dim_param 2)
    shape = b"".join(_ld(1, _ld(2, d.encode()) if isinstance(d, str) else _int(1, d)) for d in dims)
    return _ld(1, name.encode()) + _ld(2, _ld(1, _int(1, FLOAT) + _ld(2, shape)))


def graph_output_names(model: bytes) -> list[str]:
    """The names of a serialised model's graph outputs."""
    names = []
    for field, start, end in _fields(model):
        if field == MODEL_GRAPH:
            graph = _payload(model, start, end)
            for f, s, e in _fields(graph):
                if f == GRAPH_OUTPUT:
                    info = _payload(graph, s, e)
                    names += [_payload(info, s2, e2).decode() for f2, s2, e2 in _fields(info) if f2 == 1]
    return names


def append_head(body: bytes, weight: np.ndarray, bias: np.ndarray) -> bytes:
    """The body model (one output: the embedding) with Gemm(weight, bias) and Softmax(axis 1) -> "probs"."""
    outputs = graph_output_names(body)
    if len(outputs) != 1:
        raise ValueError(f"the body graph has {len(outputs)} outputs; expected one (the embedding)")
    weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    head = (_ld(GRAPH_INITIALIZER, _tensor("head_weight", weight)) + _ld(GRAPH_INITIALIZER, _tensor("head_bias", bias))
            + _ld(GRAPH_NODE, _node("Gemm", [outputs[0], "head_weight", "head_bias"], "logits", "head", "transB", 1))
            + _ld(GRAPH_NODE, _node("Softmax", ["logits"], "probs", "softmax", "axis", 1))
            + _ld(GRAPH_OUTPUT, _float_output("probs", ["batch", int(weight.shape[0])])))
    parts = []
    for field, start, end in _fields(body):
        if field != MODEL_GRAPH:
            parts.append(body[start:end])
            continue
        graph = _payload(body, start, end)
        kept = b"".join(graph[s:e] for f, s, e in _fields(graph) if f != GRAPH_OUTPUT)
        parts.append(_ld(MODEL_GRAPH, kept + head))
    return b"".join(parts)
