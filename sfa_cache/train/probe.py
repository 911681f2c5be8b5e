"""Linear probes: what a frozen image model's per-frame features encode.

The demo asks whether its stand-in image checkpoint already carries the per-frame facts the
video classes are made of (where the acting shape is, whether it is lit). A linear classifier on
the frozen CLS tokens of video frames answers it: fitted on some frames, scored on others.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sfa_cache.runtime import autocast
from sfa_cache.video.transforms import eval_transform


@torch.inference_mode()
def frame_tokens(backbone: nn.Module, frames: np.ndarray, image_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], device: torch.device, amp: str = "none", chunk: int = 256) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] -> the backbone's CLS tokens [N, D] float32 on the CPU, each
    frame resized and centre-cropped as an evaluation clip's frames are."""
    backbone.eval()
    out = []
    for start in range(0, len(frames), chunk):
        x = eval_transform(frames[start : start + chunk], image_size, mean, std).to(device)
        with autocast(device, amp):
            out.append(backbone(x).float().cpu())
    return torch.cat(out)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                 l2: float = 1e-3, iterations: int = 200) -> float:
    """Accuracy (%) on (test_x [M, D], test_y [M]) of a multinomial logistic regression fitted
    by L-BFGS on (train_x [N, D], train_y [N]); features standardised with the training
    statistics, L2 penalty `l2` on the weights. Deterministic."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    linear = nn.Linear(a.shape[1], classes).double()
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")
    a, b = a.double(), b.double()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(a), train_y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * float((linear(b).argmax(1) == test_y).double().mean())
