"""Dense module -> ONNX: fold batch norm into the convolutions, export with a dynamic batch axis.

    model = to_onnx(zoo.extract("c03"), (1, 28, 28))   # onnx.ModelProto, input "input", output "logits"
    models = to_onnx_many([zoo.extract(c.id) for c in zoo.front], (1, 28, 28))  # one exporter call

The exported graph has no BatchNormalization node: every ``Conv2d -> BatchNorm2d`` pair inside an
``nn.Sequential`` is replaced by one convolution with a bias (``fold_batchnorm``), and a BN that
cannot be folded is an error rather than a silent leftover.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Folded:
    """A BN-folded copy of a module and what folding did to its parameter count.

    ``params_delta`` = parameters after folding - parameters before: each folded BN removes its
    ``2 * C`` affine parameters; a bias-less conv gains a ``C``-element bias.
    """

    module: nn.Module
    folded_bn: int
    params_delta: int


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fold_batchnorm(module: nn.Module) -> Folded:
    """An eval-mode deep copy of ``module`` with every ``Conv2d -> BatchNorm2d`` pair of an
    ``nn.Sequential`` fused into one ``Conv2d`` (the BN becomes ``nn.Identity``).

    Raises ``ValueError`` if a ``BatchNorm2d`` is left (one without running statistics, or not
    directly after a convolution in a ``Sequential``): the export contract is a BN-free graph.
    """
    folded = copy.deepcopy(module).eval()
    before = _param_count(folded)
    count = 0
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent)
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d
                    and bn.running_mean is not None and bn.running_var is not None):
                parent[i] = fuse_conv_bn_eval(conv, bn)
                parent[i + 1] = nn.Identity()
                count += 1
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(
            f"cannot fold batch norm layers {left[:3]} into a preceding convolution (a BN needs "
            "running statistics - extract with bn_stats - and must follow a Conv2d in a Sequential)"
        )
    return Folded(folded, count, _param_count(folded) - before)


class _Parallel(nn.Module):
    """Several modules applied to the same input; returns the tuple of their outputs."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(net(x) for net in self.nets)


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in model.graph.output:
        if value.name == old:
            value.name = new


def _strip_prefix(model: onnx.ModelProto) -> None:
    """Rename initializers ``nets.<i>.<name>`` to ``<name>`` (as in a single-module export)."""
    taken = {init.name for init in model.graph.initializer}
    renames = {}
    for init in model.graph.initializer:
        match = re.match(r"nets\.\d+\.(.+)", init.name)
        if match and match.group(1) not in taken:
            renames[init.name] = match.group(1)
            taken.add(match.group(1))
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]


def to_onnx_many(modules: Sequence[nn.Module], input_shape: tuple[int, int, int], *,
                 opset: int | None = None) -> list[onnx.ModelProto]:
    """:func:`to_onnx` for several modules with one exporter call (much faster than one call
    each: the exporter's fixed costs are paid once), then one graph per module split out with
    ``onnx.utils.Extractor``. Each returned model is self-contained, with input ``"input"`` and
    output ``"logits"``; identical initializers may be shared by name across them."""
    if not modules:
        return []
    folded = [fold_batchnorm(m).module for m in modules]
    outputs = [f"{OUTPUT_NAME}_{i}" for i in range(len(folded))]
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Parallel(folded).eval(), (example,), dynamo=True, dynamic_shapes=({0: batch},),
            input_names=[INPUT_NAME], output_names=outputs, opset_version=opset, verbose=False,
        )
    combined = program.model_proto
    if any(node.op_type == "BatchNormalization" for node in combined.graph.node):
        raise RuntimeError("the exported graph still contains BatchNormalization nodes")
    extractor = onnx.utils.Extractor(combined)
    models = []
    for name in outputs:
        model = extractor.extract_model([INPUT_NAME], [name])
        _rename_output(model, name, OUTPUT_NAME)
        _strip_prefix(model)
        models.append(model)
    return models


def to_onnx(module: nn.Module, input_shape: tuple[int, int, int], *,
            opset: int | None = None) -> onnx.ModelProto:
    """Export a dense eval-mode module to ONNX with batch norm folded into the convolutions.

    ``input_shape`` is ``(channels, height, width)`` of one image; the graph's input ``"input"``
    is ``(batch, C, H, W)`` float32 with a dynamic ``batch`` axis, its output is ``"logits"``.
    ``opset`` defaults to the exporter's own. Raises ``ValueError`` if a BN cannot be folded.
    """
    return to_onnx_many([module], input_shape, opset=opset)[0]
