"""A memory model of one training step, for when no GPU is there to measure on.

Peak bytes of a step at batch B and F frames = weights and optimiser state + inputs + the
activations autograd saves for the backward + the largest transient working buffer. Each term is
written out below; the activation term per transformer block was calibrated by counting the
tensors autograd really saves (`torch.autograd.graph.saved_tensors_hooks`) for timm ViTs and our
temporal transformer, and the tests keep the two within 10%. What the model leaves out: the CUDA
context, allocator fragmentation (a few percent to ~20%), the attention matrix of unfused attention
(SDPA's fused kernels do not keep it) and cuDNN / cuBLAS workspaces. docs/benchmarks.md compares it
with `torch.cuda.max_memory_allocated` where a GPU was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sfa_cache.cost.regimes import REGIMES, SpatialShape, spatial_shape
from sfa_cache.errors import SfaError
from sfa_cache.models.config import ViViTConfig
from sfa_cache.models.vivit import ViViTFE

FP32 = 4
OPTIMIZER_STATE_BYTES = {"sgd": 4, "adamw": 8}  # per trainable parameter: momentum; exp_avg + exp_avg_sq


def _low(amp: str) -> int:
    """Bytes per element of what autocast computes in low precision (matmul inputs and outputs)."""
    return 2 if amp in ("bf16", "fp16") else FP32


def block_saved_bytes(width: int, mlp_dim: int, heads: int, amp: str) -> int:
    """Bytes one pre-norm transformer block saves for backward, per token.

    The two LayerNorm inputs (the residual stream) stay fp32 under autocast; in low precision:
    LN1 output (qkv input), q/k/v, attention output, projection input, LN2 output (fc1 input),
    fc1 output (GELU input) and GELU output (fc2 input): 6 D + 2 M elements. Fused attention adds
    one fp32 log-sum-exp per head.
    """
    return 2 * width * FP32 + (6 * width + 2 * mlp_dim) * _low(amp) + heads * FP32


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of one training step, by part."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _temporal_sizes(cfg: ViViTConfig) -> tuple[int, int, int, int]:
    t, width = cfg.temporal, int(cfg.embed_dim)
    return t.depth, width, t.num_heads or max(1, width // 64), t.mlp_dim or 4 * width


def _stage2_params(cfg: ViViTConfig) -> int:
    """Adapter + temporal + head parameters, counted on a meta-device build (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in ViViTFE(cfg, with_spatial=False).parameters())


def saved_activation_bytes(regime: str, cfg: ViViTConfig, batch: int, amp: str,
                           shape: SpatialShape | None = None) -> dict[str, int]:
    """Bytes autograd keeps between forward and backward, by part (the calibrated terms)."""
    frames = cfg.temporal.num_frames
    depth, width, heads, mlp = _temporal_sizes(cfg)
    low = _low(amp)
    parts = {
        "temporal activations": batch
        * ((frames + 1) * (depth * block_saved_bytes(width, mlp, heads, amp) + width * FP32))
    }
    if cfg.adapter.kind != "none":
        hidden = cfg.adapter.hidden_dim or width
        parts["adapter activations"] = batch * frames * (width + 2 * hidden) * low
    if regime == "baseline":
        s = shape or spatial_shape(cfg.spatial.backbone, cfg.spatial.image_size)
        per_frame = s.tokens * (s.depth * block_saved_bytes(s.width, s.mlp_dim, s.heads, amp) + s.width * FP32)
        if low != FP32:  # autocast's low-precision copy of the pixels for the patch embedding
            per_frame += 3 * s.image_size**2 * low
        parts["spatial activations"] = batch * frames * per_frame
    return parts


def estimate_step_memory(regime: str, cfg: ViViTConfig, *, batch: int = 1, amp: str = "bf16",
                         optimizer: str = "sgd") -> MemoryEstimate:
    """Peak bytes of one optimiser step of `regime` (regimes.py) for `cfg` at `batch` clips."""
    if regime not in REGIMES:
        raise SfaError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise SfaError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_STATE_BYTES)}")
    # The cached regime never builds the spatial ViT, so its backbone need not be a timm name
    # (a cache written by `write_features` from features computed elsewhere).
    shape = spatial_shape(cfg.spatial.backbone, cfg.spatial.image_size) if regime != "cached" else None
    frames, size = cfg.temporal.num_frames, cfg.spatial.image_size
    spatial_p, head_p = (shape.params if shape else 0), _stage2_params(cfg)
    trainable = head_p + (spatial_p if regime == "baseline" else 0)
    stored = head_p + (spatial_p if regime != "cached" else 0)
    low = _low(amp)
    est = MemoryEstimate()
    est.parts["weights (fp32)"] = stored * FP32
    est.parts["gradients + optimiser state"] = trainable * (FP32 + OPTIMIZER_STATE_BYTES[optimizer])
    if low != FP32:
        est.parts["autocast weight copies"] = trainable * low
    pixels = 3 * size * size * FP32
    est.parts["inputs"] = batch * frames * (cfg.embed_dim * FP32 if regime == "cached" else pixels)
    est.parts.update(saved_activation_bytes(regime, cfg, batch, amp, shape))
    # The largest transient buffer: gradients of the widest activation during backward, or for
    # `paper` the live tensors of one block while a frame chunk goes through the frozen ViT.
    depth, width, heads, mlp = _temporal_sizes(cfg)
    transient = 2 * batch * (frames + 1) * mlp * low
    if regime == "baseline":
        transient = max(transient, 2 * batch * frames * shape.tokens * shape.mlp_dim * low)
    elif regime == "paper":
        chunk = min(batch * frames, cfg.spatial.frame_chunk)
        transient = max(
            transient, chunk * shape.tokens * (2 * shape.width * FP32 + (3 * shape.width + 2 * shape.mlp_dim) * low)
        )
    est.parts["transient buffers"] = transient
    return est
