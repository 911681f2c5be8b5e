"""The temporal transformer of ViViT-FE: [B, T, D] per-frame tokens -> [B, num_classes] logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from sfa_cache.errors import SfaError
from sfa_cache.models.config import TemporalConfig


class Attention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention` (flash / mem-efficient)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise SfaError(f"temporal width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, C/heads]
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), x + MLP(LN(x)), with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden_features=mlp_dim, act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TemporalTransformer(nn.Module):
    """CLS token + learned temporal position embeddings + `depth` blocks + classification head.

    `pos_embed` has `num_frames + 1` slots: slot 0 belongs to the CLS token, slots 1.. to frames.
    """

    def __init__(self, cfg: TemporalConfig, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        if cfg.num_frames < 1:
            raise SfaError(f"frames must be >= 1, got {cfg.num_frames}")
        self.num_frames = cfg.num_frames
        self.embed_dim = embed_dim
        heads = cfg.num_heads or max(1, embed_dim // 64)
        mlp_dim = cfg.mlp_dim or 4 * embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_frames + 1, embed_dim))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth, device="cpu").tolist()  # "cpu": also under a meta device
        self.blocks = nn.Sequential(*[Block(embed_dim, heads, mlp_dim, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        trunc_normal_(self.pos_embed, std=cfg.pos_embed_std)  # timm truncates at +-2 (absolute)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_weights)
        nn.init.zeros_(self.head.weight)  # as timm's ViT head: start from uniform predictions
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] frame tokens -> [B, D] normalised CLS output (pre-logits)."""
        B, T, D = x.shape
        if T != self.num_frames:
            raise SfaError(
                f"temporal transformer built for {self.num_frames} frames got {T}; rebuild it for "
                f"{T} frames (checkpoints are interpolated on load)"
            )
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, num_classes]."""
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def resize_temporal_pos_embed(pos_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[1, 1 + F1, D] -> [1, 1 + F2, D]: linear interpolation over frames, CLS slot kept apart.

    Resizing to the same length returns the input unchanged (exact identity).
    """
    cls_slot, frames = pos_embed[:, :1], pos_embed[:, 1:]
    if frames.shape[1] == num_frames:
        return pos_embed
    # align_corners=True maps first frame to first frame and last to last, so a clip sampled
    # uniformly at F2 frames sees the same temporal positions as at F1.
    resized = F.interpolate(
        frames.transpose(1, 2).float(), size=num_frames, mode="linear", align_corners=frames.shape[1] > 1
    ).transpose(1, 2)
    return torch.cat([cls_slot, resized.to(pos_embed.dtype)], dim=1)
