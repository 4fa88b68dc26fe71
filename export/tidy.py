"""Make an exported graph lean, portable and self-describing before it is written.

- :func:`strip_exporter_metadata`: drop what the torch exporter attaches to every node and value
  (its stack traces with the build machine's absolute paths, FX node names, class hierarchies),
  and the stale ``value_info`` (every runtime re-infers shapes);
- :func:`set_minimal_ir_version`: the lowest IR version that can hold the model's opsets (the
  exporter writes its newest IR, which older runtimes reject although nothing in it needs it);
- :func:`describe`: ``metadata_props`` (string key/value pairs every ONNX Runtime API exposes as
  the model's custom metadata) saying how to feed the model and read its output;
- :func:`fix_batch`: the dynamic batch axis fixed to a size (NNAPI and CoreML need fixed shapes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import onnx
from onnx import helper
from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

import pareco

BATCH_DIM = "batch"
"""Name of the dynamic batch axis of the exported input and output."""

PRODUCER = "pareco-export"


def strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Remove the exporter's per-node/per-value metadata and doc strings and all ``value_info``,
    in place; set a neutral producer. Computation, names and shapes of inputs/outputs are kept."""
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in [*graph.input, *graph.output]:
        del value.metadata_props[:]
        value.doc_string = ""
    for init in graph.initializer:
        del init.metadata_props[:]
        init.doc_string = ""
    del graph.value_info[:]
    del graph.metadata_props[:]
    graph.doc_string = ""
    model.doc_string = ""
    model.producer_name, model.producer_version = PRODUCER, pareco.__version__


def minimal_ir_version(opsets: Mapping[str, int]) -> int:
    """The lowest IR version of ONNX's release table whose opsets cover ``opsets``
    (domain -> version; ``""`` is the default domain, ``ai.onnx.ml`` the ML one)."""
    need_onnx = opsets.get("", opsets.get("ai.onnx", 1))
    need_ml = opsets.get("ai.onnx.ml", 1)
    candidates = [ir for _, ir, onnx_opset, ml_opset, *_ in helper.VERSION_TABLE
                  if onnx_opset is not None and onnx_opset >= need_onnx
                  and (ml_opset or 0) >= need_ml]
    if not candidates:
        raise ValueError(f"opsets {dict(opsets)} are newer than this onnx {onnx.__version__} knows")
    return max(3, min(candidates))  # IR 3 is the first with opset imports


def set_minimal_ir_version(model: onnx.ModelProto) -> None:
    """Lower ``model.ir_version`` to :func:`minimal_ir_version` of its opset imports (never
    raises it). Call after :func:`strip_exporter_metadata`: node metadata needs IR 10."""
    opsets = {o.domain: o.version for o in model.opset_import}
    model.ir_version = min(model.ir_version, minimal_ir_version(opsets))


def describe(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Replace ``model.metadata_props`` with ``props`` (sorted by key, so files are reproducible)."""
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]


def fix_batch(model: onnx.ModelProto, batch: int) -> None:
    """Fix the batch axis (the symbolic first axis of the first input, whatever the exporter
    named it) of every input, output and intermediate value to ``batch``, in place.

    A model already fixed to ``batch`` is left as it is. Raises ``ValueError`` if ``batch < 1``
    or the first input's first axis is neither symbolic nor ``batch``."""
    if batch < 1:
        raise ValueError(f"the fixed batch size must be >= 1, got {batch}")
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
        return
    if not dims or not dims[0].dim_param:
        raise ValueError("the model's input has no dynamic batch axis to fix")
    make_dim_param_fixed(model.graph, dims[0].dim_param, batch)
    fix_output_shapes(model)


def metadata(*, arch: str, config: Mapping, precision: str, input_name: str, output_name: str,
             input_shape: Sequence[int | str], mean: Sequence[float], std: Sequence[float],
             classes: Sequence[str]) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: the input contract (layout NCHW float32,
    pixels scaled to [0, 1] then normalized per channel), the output (logits, one per class, in
    ``class_names`` order) and the configuration it is. Lists are JSON."""
    channels, size = input_shape[1], input_shape[2]
    color = {1: "grayscale", 3: "RGB"}.get(int(channels), f"{channels} channels")
    return {
        "pareco.arch": arch,
        "pareco.config_id": str(config["id"]),
        "pareco.mflops": f"{config['mflops']:.6g}",
        "pareco.test_acc": "" if config.get("test_acc") is None else f"{config['test_acc']:.6g}",
        "pareco.precision": precision,
        "pareco.version": pareco.__version__,
        "input_name": input_name,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "input_shape": json.dumps(list(input_shape)),
        "input_color": color,
        "preprocessing": (f"resize to {size}x{size} (bilinear, centre square), {color}; "
                          "x = pixel / 255 (8-bit) so x is in [0, 1]; "
                          "x = (x - mean[c]) / std[c] per channel c"),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "output_name": output_name,
        "output": ("float32 [batch, classes] logits (unnormalized scores): softmax gives "
                   "probabilities, argmax the class index into class_names"),
        "class_names": json.dumps(list(classes)),
    }
