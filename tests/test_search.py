"""pareco.search: Pareto-aware sampling (Algorithm 2), the GP/acquisition, and ParetoSearch."""

import numpy as np
import pytest
import torch

from pareco.models import build
from pareco.search import ParetoSearch, flops_functions
from pareco.search.acquisition import TchebyshevLCB
from pareco.search.gp import CEPredictor, fit_ce_gp, hyperparameters
from pareco.search.sampling import binary_search, draw_target
from pareco.width import ChannelGroup, WidthSpace

LOWER = 0.316
SPACE = WidthSpace((ChannelGroup("a", 64), ChannelGroup("b", 64), ChannelGroup("c", 64)), LOWER)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def smooth(alpha: torch.Tensor) -> torch.Tensor:
    return (alpha**2 * WEIGHTS).sum(-1)


def exact(alpha: torch.Tensor) -> torch.Tensor:
    return ((SPACE.channels_batch(alpha) / 64) ** 2 * WEIGHTS).sum(-1)


def true_ce(alpha: torch.Tensor) -> torch.Tensor:
    """Decreasing in every multiplier; group a matters most."""
    return 0.4 + 1.0 / (alpha * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)).sum(-1)


def make_search(**kw) -> ParetoSearch:
    kw = {"warmup": 20, "seed": 3, **kw}
    return ParetoSearch(SPACE, smooth, exact, **kw)


def warmed_up(search: ParetoSearch) -> ParetoSearch:
    while search.warming_up:
        search.extend(search.propose(None))
    return search


# ------------------------------------------------------------------------- Algorithm 2 parts
def test_targets_are_drawn_proportionally_to_areas_and_never_beyond_the_front():
    # front (F, CE): a big gap between 0.4 and 0.8 holds most of the area
    flops = torch.tensor([0.3, 0.4, 0.8, 0.9, 0.6], dtype=torch.float64)
    ce = torch.tensor([2.0, 1.9, 1.0, 0.95, 1.95], dtype=torch.float64)  # (0.6, 1.95) dominated
    from pareco.pareto import front_areas
    fa = front_areas(flops, ce)
    p = fa.areas.numpy() / fa.areas.numpy().sum()
    gen = torch.Generator().manual_seed(0)
    n = 4000
    targets = np.array([draw_target(flops, ce, 0.25, 1.0, gen) for _ in range(n)])
    edges = fa.bounds.numpy()
    counts = np.array([((targets >= a) & (targets < b)).sum() for a, b in edges])
    assert p[1] > 0.8  # the dominant gap
    sigma = np.sqrt(n * p * (1 - p))
    assert (np.abs(counts - n * p) <= 4 * sigma + 1).all(), (counts, n * p)
    inside = targets[(targets >= 0.4) & (targets < 0.8)]  # uniform within the interval
    assert abs((inside - 0.4).mean() / 0.4 - 0.5) < 0.02
    # no target beyond the front's ends [0.3, 0.9], although the range is [0.25, 1]
    assert targets.min() >= 0.3 and targets.max() <= 0.9


def test_binary_search_reaches_reachable_target_with_direction_rule():
    calls = []

    def solve(lam: float) -> torch.Tensor:  # more FLOPs weight -> cheaper config
        calls.append(lam)
        return torch.full((3,), 1.0 - 0.6 * lam, dtype=torch.float64)

    flops = lambda a: a.mean(-1)
    res = binary_search(solve, flops, target=0.75, eps=0.01, max_steps=10)
    assert abs(res.flops - 0.75) <= 0.01 and res.error <= 0.01
    assert calls[0] == 0.5 and calls[1] == 0.25  # F(0.5) = 0.7 < 0.75 -> decrease lam_F
    assert res.steps == len(calls) < 10


def test_binary_search_keeps_closest_candidate_when_unreachable():
    # the solver's FLOPs jump over the target: 0.8 below lam = 0.3, 0.5 above; target 0.66
    def solve(lam: float) -> torch.Tensor:
        return torch.tensor([0.8 if lam < 0.3 else 0.5, lam], dtype=torch.float64)

    res = binary_search(solve, lambda a: a[:, 0], target=0.66, eps=1e-9, max_steps=6)
    assert res.steps == 6
    # lam 0.5 -> 0.5 (err .16), 0.25 -> 0.8 (err .14, the first closest), then 0.375, 0.3125, ...
    assert res.flops == pytest.approx(0.8) and res.lam_flops == 0.25
    assert res.alpha[1].item() == 0.25 and res.error == pytest.approx(0.14)


# ---------------------------------------------------------------------------- GP + acquisition
def test_cached_predictor_matches_botorch_posterior_and_warm_start_loads():
    gen = torch.Generator().manual_seed(0)
    x = SPACE.sample(30, gen)
    y = true_ce(x) + 0.01 * torch.randn(30, generator=gen, dtype=torch.float64)
    gp = fit_ce_gp(x, y, LOWER)
    xt = SPACE.sample(5, gen)
    mean, sigma = CEPredictor(gp)(xt)
    post = gp.posterior(xt)
    torch.testing.assert_close(mean, post.mean.squeeze(-1))
    torch.testing.assert_close(sigma, post.variance.squeeze(-1).sqrt())
    # warm start: one iteration from the optimum of the same (standardized) data stays there,
    # while one iteration from the default initialization is far from it
    hypers = hyperparameters(gp)
    warm = hyperparameters(fit_ce_gp(x, y + 0.01, LOWER, previous=hypers, maxiter=1))
    cold = hyperparameters(fit_ce_gp(x, y + 0.01, LOWER, maxiter=1))
    ls = "covar_module.raw_lengthscale"
    torch.testing.assert_close(warm[ls], hypers[ls], atol=1e-3, rtol=1e-3)
    assert (cold[ls] - hypers[ls]).abs().max() > 0.05


def test_acquisition_is_tchebyshev_of_lcb_and_flops():
    gen = torch.Generator().manual_seed(1)
    x = SPACE.sample(25, gen)
    y = true_ce(x)
    gp = fit_ce_gp(x, y, LOWER)
    acq = TchebyshevLCB(gp, smooth, beta=0.1, lam_flops=0.3, ce_range=(1.0, 2.0),
                        flops_range=(0.1, 1.0))
    pts = SPACE.sample(4, gen)
    mean, sigma = CEPredictor(gp)(pts)
    g_ce = (mean - 0.1**0.5 * sigma - 1.0) / 1.0
    g_f = (smooth(pts) - 0.1) / 0.9
    expected = -(torch.maximum(0.7 * (g_ce + 0.1), 0.3 * (g_f + 0.1)) + 1e-6 * (0.7 * g_ce + 0.3 * g_f))
    torch.testing.assert_close(acq(pts.unsqueeze(1)), expected)


# ----------------------------------------------------------------------------- ParetoSearch
def test_history_starts_with_the_anchors_and_warmup_proposals_are_uniform():
    search = make_search(m=2, warmup=6)
    assert search.history.tolist() == [list(SPACE.smallest), list(SPACE.full)]
    seen = []
    while search.warming_up:
        a = search.propose(None)
        assert a.shape == (2, 3) and a.dtype == torch.float64
        assert (a == a[:, :1]).all()  # one multiplier broadcast to all groups
        assert (a >= LOWER).all() and (a <= 1.0).all()
        assert search.last_stats["phase"] == "warmup"
        seen.append(a[:, 0])
        search.extend(a)
    assert len(search.history) == 6 and len(torch.cat(seen).unique()) == 4
    with pytest.raises(ValueError, match="CE"):
        search.propose(None)
    with pytest.raises(ValueError, match="6 configs"):
        search.propose(torch.ones(5))


def test_state_dict_round_trip_gives_identical_proposals():
    a = warmed_up(make_search(m=1, max_steps=3, eps=0.05))
    a.extend(a.propose(true_ce(a.history)))           # one search step: GP hypers exist now
    state = a.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("gp.") for k in state)
    b = make_search(m=1, max_steps=3, eps=0.05, seed=99)  # different seed: state must override
    b.load_state_dict(state)
    torch.testing.assert_close(b.history, a.history)
    ce = true_ce(a.history)
    pa, pb = a.propose(ce), b.propose(ce)
    assert torch.equal(pa, pb)


def test_search_does_not_touch_global_rng():
    search = warmed_up(make_search(m=1, max_steps=2))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    search.propose(true_ce(search.history))
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------ a real network
def test_flops_functions_of_a_real_net():
    net = build("resnet20", num_classes=10, in_channels=1, image_size=8)
    smooth_f, exact_f = flops_functions(net)
    d = net.width_space.dim
    ones = torch.ones(1, d, dtype=torch.float64)
    assert exact_f(ones).item() == pytest.approx(1.0) and smooth_f(ones).item() == pytest.approx(1.0)
    # alphas whose channels are integral: smooth == exact; otherwise they differ but stay close
    full = torch.tensor(net.width_space.full_channels, dtype=torch.float64)
    integral = torch.stack([torch.round(f * full) / full for f in (0.5, 0.75)])
    torch.testing.assert_close(smooth_f(integral), exact_f(integral))
    assert exact_f(integral)[0].item() == pytest.approx(net.macs(integral[0]) / net.macs())
    # batch shapes used by optimize_acqf, and gradients for the acquisition optimizer
    x = (0.4 + 0.5 * torch.rand(5, 1, d, dtype=torch.float64)).requires_grad_(True)
    f = smooth_f(x)
    assert f.shape == (5, 1)
    f.sum().backward()
    assert (x.grad > 0).all()
