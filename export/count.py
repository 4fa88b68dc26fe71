"""Cost of an ONNX graph, counted from the graph itself (independent of the torch cost model).

- MACs: multiply-accumulates of ``Conv``, ``Gemm`` and ``MatMul`` nodes for ONE input image,
  from ONNX shape inference with the batch axis fixed to 1 (the convention of
  ``net.macs``: conv + linear only; element-wise ops, pooling and activations are not MACs).
- Parameters: elements of the weights and biases of the ``Conv``/``Gemm``/``MatMul`` nodes,
  counted per use, plus any other floating-point initializer of rank >= 1. Rank-0 initializers
  (e.g. ``Clip`` bounds) are op constants and integer ones are shape constants, not parameters.
  The exporter's optimizer drops all-zero biases and merges identical initializers, so the torch
  side of the comparison is :func:`module_params` (weights plus non-zero biases, per layer).
"""

from __future__ import annotations

import math

import onnx
from torch import nn
from onnx import TensorProto, shape_inference

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def _with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every graph input's first axis fixed to 1 and shapes re-inferred (strict)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for value in m.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    for value in m.graph.output:
        value.type.tensor_type.ClearField("shape")
    return shape_inference.infer_shapes(m, check_type=True, strict_mode=True, data_prop=True)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = value.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in t.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of one image through ``model`` (Conv + Gemm + MatMul).

    Raises ``ValueError`` if a counted node's shapes cannot be inferred statically, or if the
    graph holds subgraphs or ops whose MACs this counter does not know (ConvTranspose, ...).
    """
    inferred = _with_batch_one(model)
    shapes = _shapes(inferred)

    def shape(name: str, node: onnx.NodeProto) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"cannot infer the shape of {name!r} (input of {node.op_type} {node.name!r})")
        return shapes[name]

    total = 0
    for node in inferred.graph.node:
        op = node.op_type
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name!r} ({op}) has subgraphs; MAC counting needs a flat graph")
        if op in ("ConvTranspose", "ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul",
                  "Einsum", "Attention"):
            raise ValueError(f"MAC counting does not support {op} nodes")
        if op == "Conv":
            w = shape(node.input[1], node)
            out = shape(node.output[0], node)
            # every output element takes (C_in / groups) * prod(kernel) multiply-accumulates
            total += math.prod(out) * math.prod(w[1:])
        elif op == "Gemm":
            a, b = shape(node.input[0], node), shape(node.input[1], node)
            attrs = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
            n = b[0] if attrs.get("transB", 0) else b[1]
            total += m * k * n
        elif op == "MatMul":
            a, b = shape(node.input[0], node), shape(node.input[1], node)
            out = shape(node.output[0], node)
            k = a[-1] if len(a) >= 1 else 1
            total += math.prod(out) * k
    return total


def count_params(model: onnx.ModelProto) -> int:
    """Parameters of ``model``: Conv/Gemm/MatMul weights and biases (per use) plus every other
    floating-point initializer of rank >= 1 (once)."""
    inits = {i.name: i for i in model.graph.initializer if i.data_type in _FLOAT_TYPES}
    total, used = 0, set()
    slots = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1)}
    for node in model.graph.node:
        for i in slots.get(node.op_type, ()):
            if i < len(node.input) and node.input[i] in inits:
                total += math.prod(inits[node.input[i]].dims)
                used.add(node.input[i])
    return total + sum(math.prod(init.dims) for name, init in inits.items()
                       if name not in used and len(init.dims) >= 1)


def module_params(module: nn.Module) -> int:
    """The torch counterpart of :func:`count_params` for a BN-folded dense module: every
    parameter, except biases that are exactly zero (an exporter may drop them losslessly)."""
    total = 0
    for name, p in module.named_parameters():
        if name.endswith("bias") and not p.detach().any():
            continue
        total += p.numel()
    return total
