"""Slimmable MobileNetV2 / MobileNetV3-Large: width spaces, exact costs, extraction, torchvision
parity."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco.models import build
from pareco.models.base import SlimmableNet
from pareco.models.torchvision_weights import load_torchvision_weights

MODELS = {"mobilenet_v2": (25, torchvision.models.mobilenet_v2),
          "mobilenet_v3_large": (22, torchvision.models.mobilenet_v3_large)}
SIZE = 64


def flop_macs(model: nn.Module, size: int, in_channels: int = 3) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, size, size))
    return counter.get_total_flops() // 2


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_bn_stats(net: SlimmableNet, alpha, gen: torch.Generator) -> dict:
    """Random eval statistics of the right shape for every BN layer at ``alpha``."""
    channels = net.width_space.channels(alpha)
    stats = {}
    for key, bn in net.bn_layers().items():
        c = bn.num_features if bn.in_group is None else channels[bn.in_group]
        stats[key] = (0.1 * torch.randn(c, generator=gen), 0.5 + torch.rand(c, generator=gen))
    return stats


def alphas(net: SlimmableNet, seed: int = 0) -> list:
    space = net.width_space
    random = space.sample(2, torch.Generator().manual_seed(seed))
    return [space.lower, 1.0, *random]


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=list(MODELS))
def net(request) -> SlimmableNet:
    torch.manual_seed(0)
    return build(request.param, num_classes=10, image_size=SIZE).eval()


def test_width_space_dims(net: SlimmableNet) -> None:
    dim, _ = MODELS[net.arch_name]
    space = net.width_space
    assert space.dim == dim and space.lower == 0.42 and space.divisor == 1
    names = [g.name for g in space.groups]
    assert names[0] == "stem" and "last_conv" in names
    assert sum(n.endswith(".expand") for n in names) == (16 if dim == 25 else 14)
    if net.arch_name == "mobilenet_v3_large":
        assert names[-1] == "classifier.hidden" and space.groups[-1].channels == 1280
    assert net.width_space.channels(space.lower)[0] == round(0.42 * space.groups[0].channels)


def test_macs_params_exact_and_extraction_equivalent(net: SlimmableNet) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    for alpha in alphas(net):
        stats = random_bn_stats(net, alpha, gen)
        dense = net.extract(alpha, stats)
        assert net.macs(alpha) == flop_macs(dense, SIZE)
        assert net.params(alpha) == n_params(dense)
        allowed = (nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.ReLU6,
                   nn.Hardswish, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout)
        assert all(isinstance(m, allowed) or type(m).__name__.startswith("Dense")
                   for m in dense.modules())
        with torch.no_grad():
            y, y_dense = net(x, alpha, stats), dense(x)
        assert y.shape == (2, 10)
        assert (y - y_dense).abs().max().item() <= 1e-5
    # batch-statistics mode (bn_stats=None) extracts to the same function too
    alpha = alphas(net, seed=3)[-1]
    with torch.no_grad():
        assert torch.allclose(net(x, alpha), net.extract(alpha)(x), atol=1e-5)


def test_torchvision_mac_figures() -> None:
    v2 = build("mobilenet_v2", num_classes=1000, image_size=224)
    v3 = build("mobilenet_v3_large", num_classes=1000, image_size=224)
    tv2, tv3 = torchvision.models.mobilenet_v2(), torchvision.models.mobilenet_v3_large()
    assert v2.macs() == flop_macs(tv2, 224) == 300_774_272
    assert v3.macs() == flop_macs(tv3, 224) == 216_589_760
    assert v2.params() == n_params(tv2) and v3.params() == n_params(tv3)
    assert abs(v2.macs(0.42) - 59e6) / 59e6 < 0.03  # the paper's smallest MobileNetV2 point


def test_any_io_shape_and_divisor() -> None:
    for name in MODELS:
        net = build(name, num_classes=7, in_channels=1, image_size=40, divisor=8).eval()
        alpha = net.width_space.sample(1, torch.Generator().manual_seed(2))[0]
        assert all(c % 8 == 0 for c in net.width_space.channels(alpha))
        x = torch.randn(3, 1, 40, 40)
        assert net(x, alpha).shape == (3, 7)
        assert net.macs(alpha) == flop_macs(net.extract(alpha), 40, in_channels=1)
    with pytest.raises(ValueError):
        net(torch.randn(1, 3, 40, 40))


def test_training_forward_uses_dropout() -> None:
    net = build("mobilenet_v3_large", num_classes=5, image_size=32).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    a = net(x, 0.5)
    torch.manual_seed(1)
    b = net(x, 0.5)
    assert not torch.equal(a, b)  # dropout active in training
    a.sum().backward()
    assert net.stem.conv.weight.grad is not None


@pytest.mark.parametrize("name", list(MODELS))
def test_torchvision_weight_import(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    tv = MODELS[name][1]()  # randomly initialized: no download
    randomize_bn(tv, torch.Generator().manual_seed(1))
    tv.eval()
    net = build(name, num_classes=1000, image_size=32).eval()
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    bn_stats = load_torchvision_weights(net, path)
    assert set(bn_stats) == set(net.bn_layers())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = tv(x)
        assert torch.allclose(net(x, None, bn_stats), ref, atol=1e-5)
        assert torch.allclose(net.extract(None, bn_stats)(x), ref, atol=1e-5)
    # wrong architecture / wrong head / stray tensors are refused
    other = "mobilenet_v3_large" if name == "mobilenet_v2" else "mobilenet_v2"
    with pytest.raises(ValueError):
        load_torchvision_weights(build(other, num_classes=1000, image_size=32), tv.state_dict())
    with pytest.raises(ValueError, match="num_classes=10"):
        load_torchvision_weights(build(name, num_classes=10, image_size=32), tv.state_dict())
    with pytest.raises(ValueError, match="not used"):
        load_torchvision_weights(net, {**tv.state_dict(), "extra.weight": torch.zeros(1)})


@pytest.mark.slow
def test_extract_exports_to_onnx() -> None:
    onnx = pytest.importorskip("onnxruntime")
    net = build("mobilenet_v3_large", num_classes=10, image_size=32).eval()
    alpha = net.width_space.sample(1, torch.Generator().manual_seed(4))[0]
    dense = net.extract(alpha, random_bn_stats(net, alpha, torch.Generator().manual_seed(5)))
    x = torch.randn(1, 3, 32, 32)
    program = torch.onnx.export(dense, (x,), dynamo=True, verbose=False)
    session = onnx.InferenceSession(program.model_proto.SerializeToString())
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(y), dense(x), atol=1e-5)
