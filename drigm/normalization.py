"""Running input normalisation for agent observations and the mixer's state (``learner.input_norm``).

:class:`RunningNorm` keeps per-feature running moments (Chan et al.'s parallel merge, in float64) and maps
x -> (x - mean) / max(std, 1). It centres every feature but only ever *shrinks* one: a feature whose spread in
the training data is below 1 keeps its scale. That matters under distribution shift: a feature that is
(near-)constant during training (a climate's ground temperature) would otherwise be divided by ~0 and explode
in a shifted test environment. Simulators with physical units (temperatures of -70..40 C, powers in kW) feed
the QMIX hypernetworks products of such inputs; unscaled they blow the mixing weights up.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningNorm(nn.Module):
    """Per-feature running mean/variance over everything passed to :meth:`update`; identity until then."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"RunningNorm dim={dim} must be >= 1")
        self.dim = dim
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Merge the rows of x (..., dim) selected by the boolean mask (x.shape[:-1]) into the moments."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"RunningNorm expects {self.dim} features, got shape {tuple(x.shape)}")
        rows = x.reshape(-1, self.dim).to(torch.float64)
        if mask is not None:
            rows = rows[mask.reshape(-1).bool()]
        n = rows.shape[0]
        if n == 0:
            return
        if not torch.isfinite(rows).all():
            raise ValueError("RunningNorm.update got NaN or inf inputs")
        b_mean = rows.mean(dim=0)
        b_m2 = ((rows - b_mean) ** 2).sum(dim=0)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += b_m2 + delta**2 * (self.count * n / total)
        self.count.copy_(total)

    def std(self) -> Tensor:
        """The running standard deviation per feature (population form; zeros before any update)."""
        return (self.m2 / self.count.clamp_min(1.0)).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        """(x - mean) / max(std, 1) per feature, in x's dtype (the identity before the first update)."""
        scale = self.std().clamp_min(1.0)
        return (x - self.mean.to(x.dtype)) / scale.to(x.dtype)
