"""Front construction (DESIGN §6): calibration, selection on val only, bounded spread, test last."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from pareco import models
from pareco.calibrate import calibrate_bn
from pareco.data.bundle import DataBundle
from pareco.evaluate import EvalResult, evaluate
from pareco.front import build_front, candidate_set, select, spread_subset
from pareco.pareto import nondominated

N_CLASSES, SIZE = 4, 8


def make_split(n: int, seed: int) -> TensorDataset:
    """A learnable 4-class 1x8x8 dataset: a class-specific template plus noise."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(N_CLASSES, 1, SIZE, SIZE, generator=g)
    g.manual_seed(seed)
    y = torch.arange(n) % N_CLASSES
    x = templates[y] + 2.5 * torch.randn(n, 1, SIZE, SIZE, generator=g)
    return TensorDataset(x, y)


def train_briefly(net: torch.nn.Module, data: Dataset, steps: int = 20) -> None:
    """A few sandwich-rule steps (full, smallest, one random width) so widths differ in accuracy."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    space = net.width_space
    step = 0
    while step < steps:
        for x, y in loader:
            opt.zero_grad()
            for alpha in (space.full, space.smallest, tuple(space.sample(1)[0].tolist())):
                torch.nn.functional.cross_entropy(net(x, alpha), y).backward()
            opt.step()
            step += 1
            if step == steps:
                break


class Logged(Dataset):
    """Records every item access as (split name, index) into a shared event list."""

    def __init__(self, base: Dataset, name: str, events: list) -> None:
        self.base, self.name, self.events = base, name, events

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        self.events.append((self.name, int(i)))
        return self.base[i]


def bundle(calib: Dataset, val: Dataset, test: Dataset) -> DataBundle:
    return DataBundle(train=calib, calib=calib, val=val, test=test, num_classes=N_CLASSES,
                      in_channels=1, image_size=SIZE, mean=(0.0,), std=(1.0,),
                      class_names=tuple("abcd"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net(one_torch_thread):
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=N_CLASSES, in_channels=1, image_size=SIZE)
    train_briefly(net, make_split(512, seed=1))
    return net.eval()


@pytest.fixture(scope="module")
def splits():
    return make_split(256, seed=2), make_split(160, seed=3), make_split(96, seed=4)


@pytest.fixture(scope="module")
def candidates(net):
    g = torch.Generator().manual_seed(7)
    h = net.width_space.sample(24, generator=g)
    return torch.cat([h, h[:3]])  # duplicates are evaluated once


CALIB, MAX = 100, 4


@pytest.fixture(scope="module")
def built(net, splits, candidates):
    events: list = []
    calib, val, test = (Logged(d, n, events) for d, n in zip(splits, ("calib", "val", "test")))
    front, others, stats = build_front(net, candidates, bundle(calib, val, test),
                                       calib_images=CALIB, max_configs=MAX, uniform_grid=5,
                                       batch_size=64)
    return front, stats, events, others


def reference(net, splits, candidates):
    """The candidate set re-evaluated independently: configs, BN stats, val accuracies, MACs."""
    calib, val, _ = splits
    configs = candidate_set(net, candidates, uniform_grid=5)
    # the same batches as build_front (batch 64): BN runs on batch statistics while calibrating
    images = [x for x, _ in DataLoader(Subset(calib, range(CALIB)), batch_size=64)]
    stats = [calibrate_bn(net, a, images) for a in configs]
    accs = [evaluate(net, a, s, val, batch_size=50).accuracy for a, s in zip(configs, stats)]
    return configs, stats, np.array(accs), np.array([net.macs(a) for a in configs], dtype=float)


def test_front_is_sorted_bounded_nondominated_and_exact(net, built):
    front, stats, _, others = built
    assert 2 <= len(front) <= MAX
    assert [c.id for c in front] == [f"c{i:02d}" for i in range(len(front))]
    macs = [c.macs for c in front]
    assert macs == sorted(macs) and len(set(macs)) == len(macs)
    pts = np.array([[c.macs, c.val_acc] for c in front])
    assert list(nondominated(pts, maximize=[False, True])) == list(range(len(front)))
    for c in front:
        assert c.macs == net.macs(c.alpha) and c.mflops == net.macs(c.alpha) / 1e6
        assert c.params == net.params(c.alpha)
        assert c.channels == net.width_space.channels(c.alpha)
        assert 0.0 <= c.val_acc <= 1.0 and 0.0 <= c.test_acc <= 1.0
    assert set(stats) == {c.id for c in front} | {c.id for c in others}


def test_front_matches_an_independent_evaluation(net, splits, candidates, built):
    front, stats, _, others = built
    configs, ref_stats, accs, macs = reference(net, splits, candidates)
    assert len(configs) == 5 + 24  # grid + H, the 3 duplicate rows removed
    nd = nondominated(np.stack([macs, accs], axis=1), maximize=[False, True])
    by_alpha = {c.alpha: c for c in front}
    assert configs[nd[np.argmin(macs[nd])]] in by_alpha   # the smallest survivor is kept
    assert configs[nd[np.argmax(macs[nd])]] in by_alpha   # and the largest
    for c in front:
        i = configs.index(c.alpha)
        assert i in set(nd.tolist())
        assert c.val_acc == pytest.approx(accs[i], abs=1e-9)
        for key, (mean, var) in stats[c.id].items():
            layer = net.bn_layers()[key]
            n = net.subnet(c.alpha).width(layer.in_group, layer.num_features)
            assert mean.shape == var.shape == (n,)
            torch.testing.assert_close(mean, ref_stats[i][key][0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(var, ref_stats[i][key][1], rtol=1e-4, atol=1e-5)


def test_every_other_candidate_is_kept_with_its_stats_and_val_accuracy(net, splits, candidates,
                                                                       built):
    front, stats, _, others = built
    configs, ref_stats, accs, _ = reference(net, splits, candidates)
    assert sorted(c.alpha for c in front + others) == sorted(configs)  # each exactly once
    assert [c.id for c in others] == [f"k{i:02d}" for i in range(len(others))]
    assert [c.macs for c in others] == sorted(c.macs for c in others)
    for c in others:
        i = configs.index(c.alpha)
        assert c.test_acc is None  # the test set is evaluated for the front only
        assert c.val_acc == pytest.approx(accs[i], abs=1e-9)
        for key, (mean, _) in stats[c.id].items():
            torch.testing.assert_close(mean, ref_stats[i][key][0], rtol=1e-4, atol=1e-5)


def test_selection_never_reads_the_test_set(net, splits, candidates, built):
    front, _, events, _ = built
    first_test = next(i for i, (name, _) in enumerate(events) if name == "test")
    assert all(name == "test" for name, _ in events[first_test:])
    assert {i for name, i in events if name == "calib"} == set(range(CALIB))
    assert {i for name, i in events if name == "test"} == set(range(len(splits[2])))
    # test labels scrambled: the same configurations are chosen, with the same val accuracies
    x, y = splits[2].tensors
    scrambled = TensorDataset(x, (y + 1) % N_CLASSES)
    front2, _, _ = build_front(net, candidates, bundle(splits[0], splits[1], scrambled),
                            calib_images=CALIB, max_configs=MAX, uniform_grid=5, batch_size=64)
    assert [(c.alpha, c.val_acc) for c in front2] == [(c.alpha, c.val_acc) for c in front]


def test_val_images_bounds_the_selection_pass(net, splits):
    events: list = []
    val = Logged(splits[1], "val", events)
    front, _, _ = build_front(net, torch.empty(0, 6, dtype=torch.float64),
                           bundle(splits[0], val, splits[2]), calib_images=50, val_images=40,
                           uniform_grid=3, batch_size=64)
    assert {i for _, i in events} == set(range(40))
    assert all(c.val_acc * 40 == pytest.approx(round(c.val_acc * 40)) for c in front)


def test_candidate_set_filters_by_ce_dedupes_and_includes_the_grid(net):
    space = net.width_space
    h = space.sample(30, generator=torch.Generator().manual_seed(3))
    macs = net.macs_batch(h)
    grid = candidate_set(net, torch.empty(0, 6, dtype=torch.float64), uniform_grid=4)
    assert grid[0] == space.smallest and grid[-1] == space.full and len(grid) == 4
    everything = candidate_set(net, h, -macs, uniform_grid=4)  # CE falls with MACs: all survive
    assert len(everything) == 34
    only_smallest = candidate_set(net, h, macs, uniform_grid=4)  # CE rises with MACs
    assert only_smallest[4:] == [tuple(h[int(torch.argmin(macs))].tolist())]
    with_nan = candidate_set(net, h, torch.where(macs == macs.min(), torch.nan, -macs), uniform_grid=0)
    assert tuple(h[int(torch.argmin(macs))].tolist()) not in with_nan
    thinned = candidate_set(net, h, -macs, uniform_grid=0, max_candidates=5)
    assert len(thinned) == 5
    kept = {net.macs(a) for a in thinned}
    assert int(macs.min()) in kept and int(macs.max()) in kept
    dup = candidate_set(net, torch.tensor([space.full, space.full]), uniform_grid=2)
    assert dup == [space.smallest, space.full]


def test_spread_subset_keeps_ends_and_spreads():
    m = np.geomspace(1.0, 100.0, 41)
    pick = spread_subset(m, 5)
    assert pick == [0, 10, 20, 30, 40]
    assert spread_subset(m[:3], 5) == [0, 1, 2]
    with pytest.raises(ValueError):
        spread_subset(m, 1)
    assert select(np.array([3.0, 1.0, 2.0]), np.array([0.9, 0.5, 0.4]), 5) == [1, 0]


def test_bad_inputs_are_rejected(net, splits):
    data = bundle(*splits)
    with pytest.raises(ValueError, match="candidates must be"):
        build_front(net, torch.rand(3, 5, dtype=torch.float64), data)
    with pytest.raises(ValueError, match="outside the width range"):
        build_front(net, torch.full((1, 6), 0.1, dtype=torch.float64), data)
    with pytest.raises(ValueError, match="candidate_ce"):
        build_front(net, torch.ones(2, 6, dtype=torch.float64), data, candidate_ce=torch.ones(3))
    with pytest.raises(ValueError, match="max_configs"):
        build_front(net, torch.ones(1, 6, dtype=torch.float64), data, max_configs=1)
    with pytest.raises(ValueError, match="validation split is empty"):
        build_front(net, torch.ones(1, 6, dtype=torch.float64),
                    bundle(splits[0], Subset(splits[1], []), splits[2]), uniform_grid=0)


def test_evaluate_dataset_and_loader_agree_with_a_manual_count(net, splits):
    val = splits[1]
    alpha = net.width_space.uniform(0.5)
    stats = calibrate_bn(net, alpha, [splits[0].tensors[0][:64]])
    net.train()
    r = evaluate(net, alpha, stats, val, batch_size=33)
    assert net.training  # mode restored
    net.eval()
    assert isinstance(r, EvalResult) and r.n == len(val)
    r2 = evaluate(net, alpha, stats, DataLoader(val, batch_size=70))
    assert r2.accuracy == r.accuracy and r2.cross_entropy == pytest.approx(r.cross_entropy, rel=1e-5)
    x, y = val.tensors
    with torch.no_grad():
        logits = net(x, alpha, stats)
    assert r.accuracy == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert r.cross_entropy == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-4)
    with pytest.raises(ValueError, match="no images"):
        evaluate(net, alpha, stats, [])
