"""ResNet-CIFAR family: exact MACs, extraction equivalence, residual width consistency."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pareco import models
from pareco.calibrate import calibrate_bn
from pareco.slim import Subnet


def random_alphas(net, n, seed=0):
    space = net.width_space
    rows = [space.smallest, space.full] + space.sample(n, torch.Generator().manual_seed(seed)).tolist()
    return rows


def random_bn_stats(net, alpha, seed=0):
    g = torch.Generator().manual_seed(seed)
    widths = net.subnet(alpha)
    out = {}
    for key, layer in net.bn_layers().items():
        c = widths.width(layer.in_group, layer.num_features)
        out[key] = (torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5)
    return out


def flop_counter_macs(module, x):
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def test_resnet20_full_width_matches_the_familiar_figures():
    net = models.build("resnet20", num_classes=10, in_channels=3, image_size=32)
    assert net.width_space.dim == 6
    assert net.width_space.lower == pytest.approx(0.316)
    assert net.macs() == 40_813_184  # ~40.8 M MACs with projection shortcuts
    assert net.params() == sum(p.numel() for p in net.parameters()) == 272_474


@pytest.mark.parametrize(
    "name, kwargs",
    [("resnet20", dict(in_channels=1, image_size=28)),
     ("resnet32", dict(in_channels=3, image_size=32, num_classes=100)),
     ("resnet20_2x", dict(in_channels=3, image_size=16)),
     ("resnet20", dict(in_channels=1, image_size=20, width_factor=0.5))],
)
def test_macs_and_params_are_exact_for_random_configs(name, kwargs):
    net = models.build(name, **kwargs)
    x = torch.randn(1, net.in_channels, net.image_size, net.image_size)
    for alpha in random_alphas(net, 6):
        dense = net.extract(alpha)
        assert net.macs(alpha) == flop_counter_macs(dense, x)
        assert net.params(alpha) == sum(p.numel() for p in dense.parameters())
    batch = torch.tensor(random_alphas(net, 6), dtype=torch.float64)
    expect = torch.tensor([net.macs(a) for a in batch], dtype=torch.float64)
    assert torch.equal(net.macs_batch(batch), expect)


@pytest.mark.parametrize("name", ["resnet20", "resnet44", "resnet20_3x"])
def test_extracted_subnet_computes_the_same_function(name):
    torch.manual_seed(0)
    net = models.build(name, num_classes=7, in_channels=1, image_size=12).eval()
    x = torch.randn(5, 1, 12, 12)
    for i, alpha in enumerate(random_alphas(net, 5, seed=1)):
        stats = random_bn_stats(net, alpha, seed=i)
        dense = net.extract(alpha, stats)
        assert all(type(m) in (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Sequential,
                               nn.Identity, nn.AdaptiveAvgPool2d, nn.Flatten)
                   or not list(m.parameters(recurse=False)) for m in dense.modules())
        with torch.no_grad():
            assert (dense(x) - net(x, alpha, stats)).abs().max() <= 1e-5
            # without stored statistics both use batch statistics
            assert (net.extract(alpha)(x) - net(x, alpha)).abs().max() <= 1e-5
        assert all(p.is_contiguous() for p in dense.parameters())


def test_every_residual_addition_sees_matching_widths():
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=8)
    seen = []

    def record(layer, x, y):
        seen.append((layer, x.shape[1], y.shape[1]))

    for alpha in random_alphas(net, 10, seed=3):
        channels = net.width_space.channels(alpha)
        seen.clear()
        net(torch.randn(2, 1, 8, 8), alpha, hook=record)  # a mismatch would raise inside forward
        for layer, c_in, c_out in seen:
            assert c_out == (channels[layer.out_group] if layer.out_group is not None else c_out)
        # the residual path of each stage is one width: every block's second conv and the
        # projection write the same group
        for block in net.blocks:
            assert block.conv2.out_group == (block.proj.out_group if block.proj else block.conv1.in_group)


def test_wrongly_wired_layer_fails_loudly():
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=8)
    wrong = Subnet(net.width_space.channels(0.5))
    with pytest.raises(RuntimeError, match="received 16 channels"):
        net.blocks[0].conv1(torch.randn(2, 16, 8, 8), wrong)


def test_forward_rejects_bad_input_and_alpha():
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="must have 6 entries"):
        net(torch.randn(2, 1, 8, 8), [0.5] * 5)
    with pytest.raises(ValueError, match="unknown model"):
        models.build("resnet21")
    with pytest.raises(ValueError, match="depth must be 6n\\+2"):
        models.build("resnet20", depth=21)


def test_calibrated_statistics_equal_the_exact_moments():
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=8)
    alpha = [0.5, 0.7, 0.4, 1.0, 0.8, 0.6]
    images = torch.randn(24, 1, 8, 8)
    stats = calibrate_bn(net, alpha, images.split(8))
    inputs = {}
    net(images, alpha, hook=lambda layer, x, y: inputs.setdefault(getattr(layer, "stats_key", None), x))
    for key, (mean, var) in stats.items():
        x = inputs[key].transpose(0, 1).flatten(1).double()
        # batches of 8 see the same per-layer inputs as one batch of 24 only for the first layer
        if key == "stem_bn":
            assert torch.allclose(mean.double(), x.mean(1), atol=1e-5)
            assert torch.allclose(var.double(), x.var(1), atol=1e-4)
        assert mean.shape == var.shape and (var >= 0).all()
    out = net.eval()(images, alpha, stats)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("device", [
    "meta",  # shape-only tensors: stands in for a GPU on a machine without one
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
])
def test_statistics_kept_on_the_cpu_serve_a_model_on_another_device(device):
    # calibrate_bn returns CPU tensors (they go into the weight file); front construction then
    # evaluates the model, on the training device, with them
    net = models.build("resnet20", num_classes=10, in_channels=1, image_size=8)
    alpha = [0.5, 0.7, 0.4, 1.0, 0.8, 0.6]
    images = torch.randn(24, 1, 8, 8)
    stats = calibrate_bn(net, alpha, images.split(8))
    assert all(m.device.type == "cpu" for m, _ in stats.values())
    expected = net.eval()(images, alpha, stats)
    out = net.to(device)(images.to(device), alpha, stats)
    assert out.device.type == device and out.shape == (24, 10)
    if device != "meta":
        assert torch.allclose(out.cpu(), expected, atol=1e-4)
