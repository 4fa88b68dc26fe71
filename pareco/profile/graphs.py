"""Single-layer ONNX graphs, built directly with ``onnx.helper`` (no exporter round trip).

A conv layer is ``Conv(+bias) -> Relu`` on a ``(1, c_in, s, s)`` float32 input: the dense subnet's
``Conv -> BatchNorm -> ReLU`` after batch-norm folding, which ONNX Runtime fuses into one kernel.
A linear layer is ``Gemm(transB=1)`` on ``(1, c_in)``. Weights are seeded random numbers: the
latency of dense float32 kernels does not depend on the values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pareco.profile.layers import LayerSpec

OPSET = 17
INPUT = "input"
OUTPUT = "output"


def _weights(rng: np.random.Generator, shape: tuple[int, ...], name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0.0, 0.05, shape).astype(np.float32), name)


def input_shape(spec: LayerSpec, c_in: int) -> tuple[int, ...]:
    """The batch-1 input shape of ``spec`` at ``c_in`` input channels."""
    return (1, c_in, spec.in_size, spec.in_size) if spec.kind == "conv" else (1, c_in)


def layer_graph(spec: LayerSpec, c_in: int, c_out: int, seed: int = 0) -> onnx.ModelProto:
    """A checked ONNX model of ``spec`` at ``c_in -> c_out`` channels, batch 1.

    Raises ``ValueError`` for channel counts below 1, or unequal in/out of a depthwise conv.
    """
    if c_in < 1 or c_out < 1:
        raise ValueError(f"channel counts must be >= 1, got {c_in} -> {c_out}")
    rng = np.random.default_rng(seed)
    if spec.kind == "conv":
        if spec.depthwise and c_in != c_out:
            raise ValueError(f"a depthwise conv needs c_in == c_out, got {c_in} -> {c_out}")
        groups = c_in if spec.depthwise else 1
        k, p = spec.kernel, spec.padding
        inits = [_weights(rng, (c_out, c_in // groups, k, k), "W"), _weights(rng, (c_out,), "B")]
        nodes = [helper.make_node("Conv", [INPUT, "W", "B"], ["y"], kernel_shape=[k, k],
                                  strides=[spec.stride] * 2, pads=[p] * 4, group=groups),
                 helper.make_node("Relu", ["y"], [OUTPUT])]
        out_size = (spec.in_size + 2 * p - k) // spec.stride + 1
        out_shape: tuple[int, ...] = (1, c_out, out_size, out_size)
    else:
        inits = [_weights(rng, (c_out, c_in), "W"), _weights(rng, (c_out,), "B")]
        nodes = [helper.make_node("Gemm", [INPUT, "W", "B"], [OUTPUT], transB=1)]
        out_shape = (1, c_out)
    graph = helper.make_graph(
        nodes, f"{spec.kind}_{c_in}_{c_out}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, input_shape(spec, c_in))],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model
