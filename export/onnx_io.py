"""Dense module -> ONNX: fold batch norm into the convolutions, export with a dynamic batch axis.

    model = to_onnx(zoo.extract("c03"), (1, 28, 28))   # onnx.ModelProto, input "input", output "logits"

The exported graph has no BatchNormalization node: every ``Conv2d -> BatchNorm2d`` pair inside an
``nn.Sequential`` is replaced by one convolution with a bias (``fold_batchnorm``), and a BN that
cannot be folded is an error rather than a silent leftover.
"""

from __future__ import annotations

import copy
import warnings
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


def to_onnx(module: nn.Module, input_shape: tuple[int, int, int], *,
            opset: int | None = None) -> onnx.ModelProto:
    """Export a dense eval-mode module to ONNX with batch norm folded into the convolutions.

    ``input_shape`` is ``(channels, height, width)`` of one image; the graph's input ``"input"``
    is ``(batch, C, H, W)`` float32 with a dynamic ``batch`` axis, its output is ``"logits"``.
    ``opset`` defaults to the exporter's own. Raises ``ValueError`` if a BN cannot be folded.
    """
    folded = fold_batchnorm(module).module
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            folded, (example,), dynamo=True, dynamic_shapes=({0: batch},),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
            verbose=False,
        )
    model = program.model_proto
    if any(node.op_type == "BatchNormalization" for node in model.graph.node):
        raise RuntimeError("the exported graph still contains BatchNormalization nodes")
    return model
