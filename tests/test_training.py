"""Unit tests of the training pieces: recipes, schedule, optimizer groups, losses, the history
re-evaluation, the policies, batch determinism and the resume-state file."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from pareco.models import build
from pareco.search import ParetoSearch, flops_functions
from pareco.training import checkpoint as ckpt
from pareco.training.history_eval import evaluate_history
from pareco.training.losses import distill_loss, label_loss
from pareco.training.loop import SeededBatches
from pareco.training.methods import (ParetoPolicy, UniformPolicy, history_budget,
                                     steps_per_refresh)
from pareco.training.optim import LRSchedule, build_optimizer
from pareco.training.recipe import (Recipe, RecipeError, TrainSpec, from_dict, list_recipes,
                                    load_recipe)

MINIMAL = {"name": "t", "model": {"arch": "resnet20"}, "data": {"dataset": "cifar10"},
           "train": {"epochs": 2}}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build("resnet20", num_classes=10, in_channels=1, image_size=16)


# --------------------------------------------------------------------------------- recipes
def test_zoo_recipes_are_valid_and_round_trip() -> None:
    names = list_recipes()
    expected = {f"resnet{d}-{ds}" for d in (20, 32, 44, 56) for ds in ("cifar10", "cifar100")}
    expected |= {f"resnet20_{k}x-cifar100" for k in (2, 3, 4, 5)} | {"resnet20-fashionmnist"}
    assert expected <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.name == name
        assert from_dict(r.to_dict()) == r
    paper = load_recipe("resnet56-cifar100")
    t = paper.train
    assert (t.lr, t.epochs, t.weight_decay, t.batch_size, t.nesterov, t.schedule) == \
        (0.1, 400, 5e-4, 128, True, "cosine")
    assert paper.independent.epochs == 200 and paper.pareco.history_size == 1000
    assert paper.override({"method": "independent"}).run_epochs == 200
    assert paper.run_epochs == 400


def test_recipe_defaults_and_imagenet_style_settings() -> None:
    r = from_dict(MINIMAL)
    assert r.method == "pareco" and r.train.label_smoothing == 0.1 and r.pareco.m == 2
    imagenet = from_dict({
        "name": "mbv2", "model": {"arch": "mobilenet_v2", "init": "torchvision",
                                  "init_source": "imagenet"},
        "data": {"dataset": "imagenet", "augment": {"crop_scale": [0.25, 1.0],
                                                    "color_jitter": 0.4, "lighting": 0.1}},
        "train": {"epochs": 250, "batch_size": 1024, "lr": 0.5, "warmup_epochs": 5,
                  "schedule": "linear", "weight_decay": "4e-5"},
    })
    assert imagenet.train.weight_decay == 4e-5  # YAML 1.1 reads 4e-5 as a string
    assert imagenet.data.augment["crop_scale"] == [0.25, 1.0]


@pytest.mark.parametrize("patch, message", [
    ({"train": {"epochs": 2, "lr": -1}}, "train.lr must be > 0"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
    ({"train": {"epochs": 2, "nesterov": "yes"}}, "train.nesterov must be true/false"),
    ({"train": {"epochs": 2, "lrate": 0.1}}, "unknown key 'train.lrate'"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"method": "best"}, "method: unknown value 'best'"),
    ({"train": {"epochs": 2, "precision": "fp16"}}, "train.precision: unknown value 'fp16'"),
    ({"model": {"arch": "vgg"}}, "model.arch: unknown model 'vgg'"),
    ({"model": {"arch": "resnet20", "kwargs": {"num_classes": 3}}}, "come from the dataset"),
    ({"pareco": {"history_size": 10}}, "must exceed pareco.warmup_configs"),
    ({"independent": {"widths": [0.5, 1.5]}}, "independent.widths must lie in (0.0, 1.0]"),
    ({"data": {"dataset": "cifar10", "val_size": 1.5}}, "data.val_size"),
    ({"front": {"uniform_grid": 1}}, "front.uniform_grid"),
    ({"pareco": {"m": 2, "uniform_middle": 2}}, "pareco.uniform_middle must be in [0, pareco.m - 1 = 1]"),
    ({"pareco": {"m": 2, "uniform_middle": 1, "proposals": 0}},
     "pareco.proposals must be in [pareco.m - pareco.uniform_middle = 1, 256]"),
    ({"pareco": {"m": 2, "proposals_from": 0.5}},
     "pareco.proposals_from needs a proposal set to switch to: pareco.proposals > "
     "pareco.m - pareco.uniform_middle = 2, got None"),
    ({"pareco": {"m": 2, "proposals": 8, "proposals_from": 1.0}},
     "pareco.proposals_from must lie in (0.0, 1.0), got 1.0"),
])
def test_recipe_errors_name_the_key(patch: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=None) as e:
        from_dict({**MINIMAL, **patch})
    assert message in str(e.value)


def test_missing_required_key_and_unknown_recipe() -> None:
    with pytest.raises(RecipeError, match="missing required key 'train.epochs'"):
        from_dict({**MINIMAL, "train": {}})
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_override_validates() -> None:
    r = from_dict(MINIMAL)
    assert r.override({"train.lr": 0.05, "data.augment.flip": False}).train.lr == 0.05
    with pytest.raises(RecipeError, match="unknown recipe key"):
        r.override({"train.nope": 1})
    with pytest.raises(RecipeError, match="train.batch_size must be >= 2"):
        r.override({"train.batch_size": 1})


# ------------------------------------------------------------------------ optimizer & schedule
def test_schedule_warmup_cosine_linear() -> None:
    cos = LRSchedule(peak=0.4, total_steps=110, warmup_steps=10, kind="cosine")
    assert cos(0) == pytest.approx(0.04) and cos(9) == pytest.approx(0.4)
    assert cos(10) == pytest.approx(0.4) and cos(60) == pytest.approx(0.2)
    assert cos(109) > 0 and cos(110) == pytest.approx(0.0, abs=1e-12)
    lin = LRSchedule(peak=0.5, total_steps=100, warmup_steps=0, kind="linear")
    assert lin(0) == 0.5 and lin(50) == pytest.approx(0.25)
    spec = TrainSpec(epochs=4, lr=0.5, warmup_epochs=1.0, schedule="linear")
    s = LRSchedule.from_spec(spec, steps_per_epoch=10, epochs=4)
    assert (s.total_steps, s.warmup_steps, s.kind) == (40, 10, "linear")


def test_no_weight_decay_on_bn_and_bias(net) -> None:
    opt = build_optimizer(net, TrainSpec(epochs=1, weight_decay=1e-3))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 1e-3 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(net.parameters()))
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_losses() -> None:
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    onehot = F.one_hot(labels, 4).float()
    assert distill_loss(logits, onehot) == pytest.approx(float(F.cross_entropy(logits, labels)))
    smooth = 0.1 * torch.full((5, 4), 0.25) + 0.9 * onehot
    assert label_loss(logits, labels, 0.1) == pytest.approx(float(distill_loss(logits, smooth)),
                                                            rel=1e-6)


# ------------------------------------------------------------------------------- policies
def test_steps_per_refresh_comes_closest_to_the_target() -> None:
    assert steps_per_refresh(1000, 200, 2) == 10          # 100 refreshes -> |H| = 200
    assert steps_per_refresh(8, 8, 2) == 2
    assert steps_per_refresh(5, 100, 2) == 1              # fewer steps than wanted refreshes
    assert steps_per_refresh(172, 60, 2) == 6             # |H| 58, not 70 (n = 5)
    assert steps_per_refresh(1287, 80, 2) == 32           # a tie (82 vs 78) keeps the larger H

    def size(total: int, n: int, m: int) -> int:
        return m * math.ceil(total / n)

    cases = [(1290, 100, 2), (977, 60, 2), (20000, 1000, 2), (172, 60, 2), (33, 7, 2), (10, 5, 2),
             (10, 7, 3), (50, 7, 3), (100, 13, 4), (7, 30, 3), (1, 2, 2)]
    assert steps_per_refresh(0, 8, 2) == 1                # no steps at all: still a valid period
    for total, target, m in cases:
        n = steps_per_refresh(total, target, m)
        best = min(abs(size(total, k, m) - target) for k in range(1, total + 1))
        assert abs(size(total, n, m) - target) == best, (total, target, m, n)


def test_history_budget_caps_the_re_evaluation_cost() -> None:
    kw = {"m": 2, "batch_size": 128, "eval_batch": 256, "max_overhead": 0.05}
    assert history_budget(64, 1170, **kw) == 37           # the default Fashion-MNIST run
    assert history_budget(1000, 400 * 390, **kw) == 432   # 400 CIFAR epochs
    assert history_budget(64, 14, **kw) == 4              # a 14-step run: warm-up only
    assert history_budget(20, 10**9, **kw) == 20          # never above history_size
    assert history_budget(64, 0, **kw) == 4               # at least the anchors + m
    # the cost model: growing H to h costs ~h^2 eval / (2m) image-forwards, at most the
    # overhead share of the ~3 (m + 2) batch image-forwards per training step
    for total in (100, 1170, 20000):
        h = history_budget(10**6, total, **kw)
        assert h**2 * 256 / 4 <= 0.05 * 3 * 4 * 128 * total < (h + 1) ** 2 * 256 / 4
    # one searched config per refresh: H grows half as fast, so the same cost allows less of it
    assert history_budget(64, 1170, searched=1, **kw) == 26


def test_uniform_policy_is_reproducible(net) -> None:
    a, b = UniformPolicy(net.width_space, 2, seed=5), UniformPolicy(net.width_space, 2, seed=5)
    first = a.middle(0)
    assert first.shape == (2, 6) and (first[:, :1] == first).all()  # one width for all groups
    assert (first >= net.width_space.lower).all() and (first <= 1).all()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.middle(1), b.middle(1))


def test_pareto_policy_refreshes_every_n_steps_and_resumes(net) -> None:
    calls = []

    def ce_fn(alphas):
        calls.append(len(alphas))
        f = net.macs_batch(alphas) / net.macs()
        return 2.0 - f

    def policy():
        search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=4, seed=1)
        return ParetoPolicy(search, n=3, ce_fn=ce_fn)

    p = policy()
    mids = [p.middle(step) for step in range(9)]       # refreshes at steps 0, 3, 6
    assert len(p.search.history) == 8                   # the 2 anchors + 3 refreshes of 2
    assert torch.equal(mids[0], mids[2]) and not torch.equal(mids[2], mids[3])
    assert torch.equal(mids[6], p.search.history[-2:])
    assert calls == [4, 6]                              # warm-up needs no CE; steps 3, 6 do
    q = policy()
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.middle(9), p.middle(9))        # same proposal after a restore
    assert p.diagnostics()["history_size"] == 10 and p.diagnostics()["refreshes"] == 4
    assert p.diagnostics()["duplicate_proposals"] == 0


def test_pareto_policy_with_uniform_middle_searches_one_and_redraws_one(net) -> None:
    def ce_fn(alphas):
        return 2.0 - net.macs_batch(alphas) / net.macs()

    def policy():
        search = ParetoSearch(net.width_space, *flops_functions(net), m=1, warmup=4, seed=1)
        return ParetoPolicy(search, n=3, ce_fn=ce_fn,
                            uniform=UniformPolicy(net.width_space, 1, seed=7))

    p = policy()
    mids = [p.middle(step) for step in range(7)]
    assert all(m.shape == (2, 6) for m in mids)
    assert torch.equal(mids[0][0], mids[2][0])          # the searched row stays for n steps
    assert len({tuple(m[1].tolist()) for m in mids}) == 7  # the uniform row is new every step
    assert all((m[1] == m[1, 0]).all() for m in mids)   # one width for all groups
    assert len(p.search.history) == 2 + 3               # H grows by the searched row only
    q = policy()
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.middle(7), p.middle(7))        # both rows resume exactly


def test_pareto_policy_with_a_proposal_set_draws_the_middle_configs_from_it(net) -> None:
    calls = []

    def ce_fn(alphas):
        calls.append(len(alphas))
        return 2.0 - net.macs_batch(alphas) / net.macs()

    def policy():
        search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=4, seed=1)
        return ParetoPolicy(search, n=4, ce_fn=ce_fn, proposals=6, seed=3)

    p = policy()
    mids = [p.middle(step) for step in range(12)]       # refreshes at steps 0, 4, 8
    assert all(m.shape == (2, 6) for m in mids)
    assert len(p.search.history) == 2 + 3 * 2           # H grows by m per refresh, not by 6
    assert calls == [4, 6]                              # the re-evaluation cost is unchanged
    assert p.current.shape == (6, 6)
    assert torch.equal(p.search.history[-2:], p.current[:2])  # the first m proposals join H
    keys = {tuple(net.width_space.channels(a)) for a in p.current}
    assert len(keys) == 6                               # six distinct proposals
    flops = sorted(float(f) for f in net.macs_batch(p.current) / net.macs())
    assert flops[-1] - flops[0] > 0.1                   # each with its own target
    last = [{tuple(r.tolist()) for r in m} for m in mids[8:]]
    current = {tuple(r.tolist()) for r in p.current}
    assert all(len(rows) == 2 and rows <= current for rows in last)  # two distinct, from the set
    assert len(set().union(*last)) > 2                  # and not the same two every step
    q = policy()
    q.load_state_dict(p.state_dict())
    assert all(torch.equal(q.middle(s), p.middle(s)) for s in range(12, 17))  # exact resume
    assert p.diagnostics()["proposals_per_refresh"] == 6


def test_pareto_policy_switches_to_the_proposal_set_at_set_from(net) -> None:
    def policy():
        search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=4, seed=1)
        return ParetoPolicy(search, n=4, ce_fn=lambda a: 2.0 - net.macs_batch(a) / net.macs(),
                            proposals=6, seed=3, set_from=8)

    p = policy()
    mids = [p.middle(step) for step in range(16)]       # refreshes at steps 0, 4, 8, 12
    for refresh in (0, 4):                              # before set_from: the paper's Algorithm 1
        assert all(torch.equal(mids[s], mids[refresh]) for s in range(refresh, refresh + 4))
    assert torch.equal(mids[4], p.search.history[4:6])  # the first m proposals, which joined H
    last = [{tuple(r.tolist()) for r in m} for m in mids[12:]]
    current = {tuple(r.tolist()) for r in p.current}
    assert all(len(rows) == 2 and rows <= current for rows in last)  # then drawn from the set
    assert len(set().union(*last)) > 2
    q = policy()
    q.load_state_dict(p.state_dict())
    assert all(torch.equal(q.middle(s), p.middle(s)) for s in range(16, 21))  # exact resume
    assert p.diagnostics()["proposal_set_from_step"] == 8


def test_pareto_policy_loads_a_state_saved_before_the_proposal_set(net) -> None:
    def policy():
        search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=4, seed=1)
        return ParetoPolicy(search, n=3, ce_fn=lambda a: 2.0 - net.macs_batch(a) / net.macs())

    p = policy()
    for step in range(5):
        p.middle(step)
    old = {k: v for k, v in p.state_dict().items() if k not in ("current", "draw_rng_state")}
    q = policy()
    q.load_state_dict(old)                              # the keys an older run wrote
    assert torch.equal(q.current, p.search.history[-2:])
    assert torch.equal(q.middle(5), p.middle(5))        # continues with H's last m rows


def test_pareto_policy_rejects_fewer_proposals_than_m(net) -> None:
    search = ParetoSearch(net.width_space, *flops_functions(net), m=2, warmup=4, seed=1)
    with pytest.raises(ValueError, match="proposals"):
        ParetoPolicy(search, n=4, ce_fn=lambda a: torch.zeros(len(a)), proposals=1)


# ------------------------------------------------------------------------ history re-evaluation
def test_evaluate_history_matches_forward_and_has_no_side_effects(net) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    alphas = torch.tensor([[1.0] * 6, [0.316] * 6, [0.5, 1.0, 0.4, 0.9, 0.7, 0.6]],
                          dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    ce = evaluate_history(net, alphas, x, y)
    assert ce.dtype == torch.float64 and ce.shape == (3,)
    with torch.no_grad():
        for i in range(3):
            expected = F.cross_entropy(net(x, alphas[i]), y)
            assert float(ce[i]) == pytest.approx(float(expected), rel=1e-5)
    shard = evaluate_history(net, alphas, x, y, rows=range(1, 3))
    assert torch.allclose(shard, ce[1:])
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ------------------------------------------------------------------------- data determinism
def test_seeded_batches_do_not_depend_on_start_or_global_rng() -> None:
    class Noisy(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x + torch.rand(()), y

    ds = Noisy(torch.arange(20.0).view(20, 1), torch.arange(20))
    batches = {k: list(range(4 * k, 4 * k + 4)) for k in range(5)}
    full = SeededBatches(ds, batches, seed=7)
    torch.manual_seed(0)
    a = [full[k] for k in range(5)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    tail = SeededBatches(ds, {k: batches[k] for k in (3, 4)}, seed=7)
    assert torch.equal(tail[3][0], a[3][0]) and torch.equal(tail[4][1], a[4][1])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


# ------------------------------------------------------------------------------ resume state
def test_state_file_round_trips_model_optimizer_and_rngs(net, tmp_path) -> None:
    opt = build_optimizer(net, TrainSpec(epochs=1))
    x = torch.randn(4, 1, 16, 16)
    net(x).sum().backward()
    opt.step()
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    opt_t, opt_doc = ckpt.pack_optimizer(opt)
    rng_t, rng_doc = ckpt.pack_rng()
    model_t = {f"model/{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / ckpt.STATE_FILE
    ckpt.save_state(path, {**model_t, **opt_t, **rng_t}, {"step": 7, "optimizer": opt_doc,
                                                         "rng": rng_doc})
    expect = (torch.rand(3), random.random(), np.random.rand())
    tensors, doc = ckpt.load_state(path)
    assert doc["step"] == 7 and list(tmp_path.iterdir()) == [path]
    ckpt.unpack_rng(tensors, doc["rng"])
    assert torch.equal(torch.rand(3), expect[0])
    assert random.random() == expect[1] and np.random.rand() == expect[2]
    opt2 = build_optimizer(net, TrainSpec(epochs=1))
    ckpt.unpack_optimizer(opt2, tensors, doc["optimizer"])
    for p in net.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p]["momentum_buffer"])
    sub = ckpt.sub_state(tensors, "model/")
    assert set(sub) == set(net.state_dict())


def test_one_thread_cpu_layout_is_channels_last_and_saved_contiguous(tmp_path) -> None:
    from pareco.training.run import training_layout

    torch.manual_seed(0)
    dense = build("resnet20", num_classes=10, in_channels=1, image_size=16)
    fast = build("resnet20", num_classes=10, in_channels=1, image_size=16)
    fast.load_state_dict(dense.state_dict())
    assert training_layout(torch.device("cpu"), threads=2) == torch.contiguous_format
    assert training_layout(torch.device("cuda"), threads=1) == torch.contiguous_format
    fast.to(memory_format=training_layout(torch.device("cpu"), threads=1))
    conv = max((v for v in fast.state_dict().values() if v.dim() == 4), key=torch.numel)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.randn(8, 1, 16, 16)
    alpha = fast.width_space.smallest
    assert torch.allclose(fast(x, alpha, None), dense(x, alpha, None), rtol=1e-4, atol=1e-5)
    path = tmp_path / ckpt.STATE_FILE  # the resume state is written contiguous, values unchanged
    ckpt.save_state(path, {f"model/{k}": v for k, v in fast.state_dict().items()}, {"step": 1})
    saved = ckpt.sub_state(ckpt.load_state(path)[0], "model/")
    assert all(v.is_contiguous() and torch.equal(v, fast.state_dict()[k]) for k, v in saved.items())


def test_corrupt_state_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / ckpt.STATE_FILE
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ckpt.StateError, match="not a readable training state"):
        ckpt.load_state(path)
    with pytest.raises(ckpt.StateError, match="no training state"):
        ckpt.load_state(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(path, boom)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_recipe_dataclass_is_frozen() -> None:
    r = from_dict(MINIMAL)
    with pytest.raises(AttributeError):
        r.method = "slim"  # type: ignore[misc]
    assert isinstance(r, Recipe)


def test_torchvision_init_loads_the_given_weights(tmp_path) -> None:
    from types import SimpleNamespace

    from torchvision.models import mobilenet_v2

    from pareco.models.torchvision_weights import torchvision_name_map
    from pareco.training.run import RunError, build_net

    torch.manual_seed(0)
    tv = mobilenet_v2(num_classes=10)
    path = tmp_path / "mbv2.pth"
    torch.save(tv.state_dict(), path)
    recipe = from_dict({"name": "m", "model": {"arch": "mobilenet_v2", "init": "torchvision",
                                               "init_source": str(path)},
                        "data": {"dataset": "cifar10"}, "train": {"epochs": 1}})
    data = SimpleNamespace(num_classes=10, in_channels=3, image_size=32)
    net = build_net(recipe, data, seed=1)
    ours = dict(net.named_modules())
    theirs = dict(tv.named_modules())
    for mine, tv_name in torchvision_name_map(net):
        assert torch.equal(ours[mine].weight, theirs[tv_name].weight), mine
    missing = recipe.override({"model.init_source": str(tmp_path / "nope.pth")})
    with pytest.raises(RunError, match="nope.pth"):
        build_net(missing, data, seed=1)
