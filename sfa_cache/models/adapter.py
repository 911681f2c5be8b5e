"""Adapters between the spatial and temporal transformers ([B, T, D] -> [B, T, D])."""

from __future__ import annotations

import torch
from torch import nn

from sfa_cache.errors import SfaError
from sfa_cache.models.config import ADAPTER_KINDS, AdapterConfig


class MLPAdapter(nn.Module):
    """The paper's two-layer MLP: Linear(D, h) - GELU - Linear(h, D)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResidualAdapter(MLPAdapter):
    """x + MLP(x) with the last layer zero-initialised.

    At Stage 2's first step the model therefore computes exactly the Stage-1 function; the adapter
    then learns a correction instead of having to re-learn the identity.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__(dim, hidden_dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def build_adapter(cfg: AdapterConfig, dim: int) -> nn.Module:
    """The adapter named by `cfg.kind`; `none` is an identity with no parameters."""
    hidden = cfg.hidden_dim or dim
    if cfg.kind == "mlp":
        return MLPAdapter(dim, hidden)
    if cfg.kind == "residual":
        return ResidualAdapter(dim, hidden)
    if cfg.kind == "none":
        return nn.Identity()
    raise SfaError(f"unknown adapter kind {cfg.kind!r}; choose one of {', '.join(ADAPTER_KINDS)}")
