"""The scalarized acquisition of MOBO-RS: augmented Tchebyshev of (CE lower bound, FLOPs).

Both objectives are minimized and put on comparable [0, 1]-ish scales before scalarizing:

    g_CE(a) = (mu(a) - sqrt(beta) * sigma(a) - ce_min) / (ce_max - ce_min)   # GP lower conf. bound
    g_F(a)  = (smooth_flops(a) - f_min) / (f_max - f_min)                     # exact model, no GP
    T(a)    = max_i lam_i (g_i(a) - z_i) + 1e-6 * sum_i lam_i g_i(a),   lam_CE = 1 - lam_F

with the reference point ``z_i = -REF_MARGIN`` below both normalized objectives (the best
observed value is 0). BoTorch maximizes, so the acquisition value is ``-T``.
"""

from __future__ import annotations

import warnings

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.models import SingleTaskGP
from botorch.exceptions.warnings import OptimizationWarning
from botorch.optim import optimize_acqf
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from pareco.search.flops import FlopsFn
from pareco.search.gp import CEPredictor

AUGMENTATION = 1e-6
"""Weight of the linear term of the augmented Tchebyshev scalarization (paper, Algorithm 2)."""

REF_MARGIN = 0.1
"""Reference point offset below the best normalized value of each objective."""


class TchebyshevLCB(AcquisitionFunction):
    """``-T_lam(alpha)`` for single points (``q = 1``), differentiable in ``alpha``.

    The GP posterior comes from a :class:`~pareco.search.gp.CEPredictor` (exact, cached): the
    ``b`` t-batches of an evaluation are independent single points, so their marginal posteriors
    are all that is needed.

    ``ce_range`` = (min, max) of the observed CE and ``flops_range`` = (min, max) of the
    normalized FLOPs of the box normalize the two objectives. ``lam_flops`` may be changed
    between optimizations (the binary search does) without rebuilding the object.
    """

    def __init__(self, model: SingleTaskGP, flops: FlopsFn, *, beta: float, lam_flops: float,
                 ce_range: tuple[float, float], flops_range: tuple[float, float]) -> None:
        super().__init__(model=model)
        self.predict = CEPredictor(model)
        self.flops = flops
        self.sqrt_beta = float(beta) ** 0.5
        self.lam_flops = float(lam_flops)
        self.ce_min, self.ce_scale = ce_range[0], max(ce_range[1] - ce_range[0], 1e-12)
        self.f_min, self.f_scale = flops_range[0], max(flops_range[1] - flops_range[0], 1e-12)

    def objectives(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized ``(g_CE, g_F)`` at ``X`` of shape ``(b, 1, d)``, each of shape ``(b,)``."""
        points = X.squeeze(-2)                                             # (b, d)
        mean, sigma = self.predict(points.reshape(-1, points.shape[-1]))
        mean, sigma = mean.reshape(points.shape[:-1]), sigma.reshape(points.shape[:-1])
        g_ce = (mean - self.sqrt_beta * sigma - self.ce_min) / self.ce_scale
        g_f = (self.flops(points) - self.f_min) / self.f_scale
        return g_ce, g_f

    @t_batch_mode_transform(expected_q=1)
    def forward(self, X: Tensor) -> Tensor:
        g_ce, g_f = self.objectives(X)
        lam_f = self.lam_flops
        lam_ce = 1.0 - lam_f
        cheb = torch.maximum(lam_ce * (g_ce + REF_MARGIN), lam_f * (g_f + REF_MARGIN))
        return -(cheb + AUGMENTATION * (lam_ce * g_ce + lam_f * g_f))


def maximize(acq: TchebyshevLCB, lower: float, dim: int, *, num_restarts: int,
             raw_samples: int, maxiter: int) -> Tensor:
    """The maximizer over ``[lower, 1]^dim`` (shape ``(dim,)``) found by ``optimize_acqf``:
    the best of ``raw_samples`` quasi-random points seeds ``num_restarts`` L-BFGS-B runs of at
    most ``maxiter`` iterations.

    The max in T is not differentiable where its two terms cross, so L-BFGS-B often ends its line
    search "abnormally" there; that point is still a good candidate, so BoTorch's retry with new
    initial conditions (which doubles the cost) is disabled and its warning silenced.
    Uses the global torch RNG for the raw samples: callers wanting determinism seed it (scoped).
    """
    bounds = torch.tensor([[lower] * dim, [1.0] * dim], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizationWarning)
        candidate, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=num_restarts,
                                     raw_samples=raw_samples, options={"maxiter": maxiter},
                                     retry_on_optimization_warning=False)
    return candidate.detach().reshape(dim).clamp(lower, 1.0)
