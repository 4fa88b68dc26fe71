"""The cross-entropy surrogate: a BoTorch ``SingleTaskGP`` on ``alpha -> CE``, warm-started, and a
cached exact predictor for the acquisition optimizer's many small posterior queries."""

from __future__ import annotations

import gpytorch
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

MAX_CHOLESKY_SIZE = 4096
"""Largest history fitted with exact Cholesky solves. GPyTorch's default (800) switches larger
training sets to approximate conjugate-gradient / Lanczos solves, which are noisier than one
dense factorization and not faster at these sizes."""


def hyperparameters(gp: SingleTaskGP) -> dict[str, Tensor]:
    """The GP's trainable hyper-parameters (raw, unconstrained), detached copies by name."""
    return {name: p.detach().clone() for name, p in gp.named_parameters()}


def fit_ce_gp(
    x: Tensor,
    ce: Tensor,
    lower: float,
    previous: dict[str, Tensor] | None = None,
    maxiter: int | None = None,
) -> SingleTaskGP:
    """Fit a float64 ``SingleTaskGP`` (BoTorch defaults: ARD RBF kernel with dimension-scaled
    priors) to ``ce[i] = f(x[i])`` for ``x`` in ``[lower, 1]^d``.

    Inputs are normalized to the unit cube with fixed bounds (not data-dependent ones, so the
    hyper-parameters mean the same thing from one fit to the next) and the outcome standardized.
    ``previous`` (from :func:`hyperparameters` of an earlier fit) initializes every hyper-parameter
    whose name and shape match -- a warm start, so the optimizer only tracks the slow drift of the
    CE landscape as training goes on. ``maxiter`` caps L-BFGS-B iterations (``None``: until
    convergence). Returns the model in eval mode with its hyper-parameters frozen.
    """
    x = x.to(torch.float64)
    y = ce.to(torch.float64).reshape(-1, 1)
    d = x.shape[-1]
    bounds = torch.tensor([[lower] * d, [1.0] * d], dtype=torch.float64)
    gp = SingleTaskGP(x, y, input_transform=Normalize(d, bounds=bounds),
                      outcome_transform=Standardize(1))
    if previous:
        with torch.no_grad():
            for name, p in gp.named_parameters():
                old = previous.get(name)
                if old is not None and old.shape == p.shape:
                    p.copy_(old)
    mll = ExactMarginalLogLikelihood(gp.likelihood, gp)
    options = {"maxiter": maxiter} if maxiter is not None else None
    with gpytorch.settings.max_cholesky_size(MAX_CHOLESKY_SIZE):
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": options} if options else None)
    return gp.eval().requires_grad_(False)


class CEPredictor:
    """Exact posterior mean and standard deviation (CE units) of a fitted GP, cached for speed.

    Factorizes the training covariance once; a query of ``b`` points then costs ``b x n`` kernel
    entries and one ``(b, n) @ (n, n)`` product, and is differentiable in the query points.
    (``gp.posterior`` re-factorizes the ``n x n`` covariance on every call for variances, or
    evaluates an ``(n + 1)``-square kernel per t-batch -- O(n^2 .. n^3) per query, which dominated
    the acquisition optimization at |H| = 1000.) Uses only the GP's public modules, so it stays
    exact for any kernel or mean module.
    """

    def __init__(self, gp: SingleTaskGP) -> None:
        self.gp = gp.eval()
        with torch.no_grad():
            train_x = gp.train_inputs[0]                    # already input-transformed in eval mode
            k = gp.covar_module(train_x).to_dense()
            k = k + gp.likelihood.noise.reshape(-1)[0] * torch.eye(len(train_x), dtype=k.dtype)
            chol = psd_safe_cholesky(k)
            resid = (gp.train_targets - gp.mean_module(train_x)).unsqueeze(-1)
            self._train_x = train_x
            self._weights = torch.cholesky_solve(resid, chol).squeeze(-1)          # K^-1 (y - m)
            self._chol_inv = torch.linalg.solve_triangular(
                chol, torch.eye(len(train_x), dtype=k.dtype), upper=False)         # L^-1

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, sigma)`` of the latent CE at ``x`` of shape ``(b, d)``, each ``(b,)``."""
        gp = self.gp
        z = gp.transform_inputs(x)
        cross = gp.covar_module(z, self._train_x).to_dense()                      # (b, n)
        mean = gp.mean_module(z) + cross @ self._weights
        prior_var = gp.covar_module(z, diag=True)
        var = (prior_var - ((cross @ self._chol_inv.T) ** 2).sum(-1)).clamp_min(1e-12)
        mean, var = gp.outcome_transform.untransform(mean.unsqueeze(-1), var.unsqueeze(-1))
        return mean.squeeze(-1), var.squeeze(-1).sqrt()
