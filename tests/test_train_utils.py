"""Schedules, losses, mixup, metrics, atomic writes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sfa_cache.atomic import atomic_path, atomic_write_json
from sfa_cache.compare import Curve, mean_if_all, mean_std, time_to_target
from sfa_cache.train.fit import patience_exhausted
from sfa_cache.train.losses import mixup, soft_cross_entropy, soft_targets
from sfa_cache.train.metrics import topk_correct
from sfa_cache.train.optim import build_optimizer, lr_at


def test_lr_warmup_then_cosine() -> None:
    kw = dict(base_lr=1.0, total_steps=110, warmup_steps=10)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.5)
    assert lr_at(110, **kw) == pytest.approx(0.0)
    assert lr_at(110, min_lr=0.1, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_soft_targets_and_loss() -> None:
    t = soft_targets(torch.tensor([0, 2]), 4, smoothing=0.2)
    torch.testing.assert_close(t.sum(-1), torch.ones(2))
    assert t[0, 0] == pytest.approx(0.85) and t[0, 1] == pytest.approx(0.05)
    assert soft_cross_entropy(torch.zeros(2, 4), t).item() == pytest.approx(math.log(4))
    logits = torch.randn(3, 5)
    labels = torch.tensor([1, 4, 0])
    torch.testing.assert_close(
        soft_cross_entropy(logits, soft_targets(labels, 5)), torch.nn.functional.cross_entropy(logits, labels)
    )


def test_mixup_is_a_convex_pair_mix() -> None:
    x = torch.arange(4.0).view(4, 1)
    t = soft_targets(torch.tensor([0, 1, 2, 3]), 4)
    mx, mt = mixup(x, t, 0.4, np.random.default_rng(0))
    lam = mt[0, 0].item()
    assert 0 < lam < 1
    torch.testing.assert_close(mx[:, 0], lam * x[:, 0] + (1 - lam) * x.flip(0)[:, 0])
    torch.testing.assert_close(mt.sum(-1), torch.ones(4))
    same_x, same_t = mixup(x, t, 0.0, np.random.default_rng(0))
    assert same_x is x and same_t is t


def test_topk() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), (1, 2, 5)) == {1: 1, 2: 2, 5: 3}


def test_no_weight_decay_on_biases_norms_and_embeddings() -> None:
    from conftest import tiny_config

    from sfa_cache.models.vivit import ViViTFE

    model = ViViTFE(tiny_config()).freeze_spatial()
    opt = build_optimizer(model, "sgd", 0.1, 0.05)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.temporal.pos_embed) not in decayed and id(model.temporal.head.bias) not in decayed
    assert id(model.temporal.head.weight) in decayed
    assert all(id(p) not in decayed for p in model.spatial.parameters())  # frozen: not optimised


def test_atomic_write_leaves_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert os.listdir(tmp_path) == ["state.json"]  # no temp file left behind
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_image_pretraining_on_synthetic_frames_learns_and_loads(tmp_path) -> None:
    """The demo's stand-in image checkpoint: it must learn, and load through --backbone-weights."""
    import numpy as np

    from sfa_cache.data.synthetic_images import FRAME_CLASSES, render_frames
    from sfa_cache.models.config import SpatialConfig
    from sfa_cache.models.spatial import SpatialTransformer, load_backbone_weights
    from sfa_cache.train.image_pretrain import ImagePretrainConfig, pretrain_on_synthetic_frames

    frames, targets = render_frames(50, 64, np.random.default_rng(0))
    assert frames.shape == (50, 64, 64, 3) and frames.dtype == np.uint8
    assert targets.min() >= 0 and targets.max() < FRAME_CLASSES and 0 < (targets % 2).mean() < 1
    cfg = ImagePretrainConfig(task="aligned", frames=2000, steps=150, seed=0)
    result = pretrain_on_synthetic_frames(cfg, tmp_path / "w.safetensors", torch.device("cpu"))
    assert result["lit_accuracy"] > 0.8, result  # chance: 0.5; the shape's colour says it at a glance
    spatial = SpatialTransformer(SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size))
    assert load_backbone_weights(spatial.backbone, tmp_path / "w.safetensors") == []


def test_generic_images_name_the_object_not_where_or_how_lit(tmp_path) -> None:
    """The generic stand-in's task: the object's kind, in images whose position, size and
    brightness vary, with augmentation that keeps the label; the weights load like any."""
    from sfa_cache.data.synthetic_images import OBJECT_KINDS, render_objects
    from sfa_cache.models.config import SpatialConfig
    from sfa_cache.models.spatial import SpatialTransformer, load_backbone_weights
    from sfa_cache.train.image_pretrain import ImagePretrainConfig, augment, pretrain_on_synthetic_frames

    frames, kinds = render_objects(400, 64, np.random.default_rng(0))
    assert frames.shape == (400, 64, 64, 3) and set(kinds.tolist()) == set(range(len(OBJECT_KINDS)))
    assert np.bincount(kinds).min() > 400 / len(OBJECT_KINDS) / 2  # every kind drawn about as often
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
    a, b = augment(x, torch.Generator().manual_seed(1)), augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)  # random, but seeded
    cfg = ImagePretrainConfig(task="generic", frames=200, steps=5, seed=0)
    result = pretrain_on_synthetic_frames(cfg, tmp_path / "g.safetensors", torch.device("cpu"))
    assert result["task"] == "generic" and result["chance"] == 1 / len(OBJECT_KINDS) and "lit_accuracy" not in result
    spatial = SpatialTransformer(SpatialConfig(backbone=cfg.backbone, image_size=cfg.image_size))
    assert load_backbone_weights(spatial.backbone, tmp_path / "g.safetensors") == []


def test_video_frame_cues_are_the_frames_facts() -> None:
    """The probe's labels: the lit frames' white shape sits in the labelled cell."""
    from sfa_cache.data.synthetic import SyntheticConfig
    from sfa_cache.data.synthetic_images import GRID, video_frame_cues

    frames, cells, lit = video_frame_cues(60, 4, SyntheticConfig(), np.random.default_rng(0))
    assert frames.shape == (240, 64, 64, 3) and 0.05 < lit.mean() < 0.5 and cells.max() < GRID * GRID
    for frame, cell in zip(frames[lit == 1], cells[lit == 1]):
        ys, xs = np.nonzero(frame.min(axis=2) > 235)  # the white shape (the lit background stays below)
        assert int(ys.mean() / 64 * GRID) * GRID + int(xs.mean() / 64 * GRID) == cell


def test_a_linear_probe_reads_what_features_hold_and_nothing_more() -> None:
    from sfa_cache.train.probe import linear_probe

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (1200,), generator=gen)
    x = torch.randn(1200, 16, generator=gen)
    x[:, 3] += 8 * y  # the label, linearly
    assert linear_probe(x[:900], y[:900], x[900:], y[900:]) > 95
    noise = torch.randn(1200, 16, generator=gen)
    assert linear_probe(noise[:900], y[:900], noise[900:], y[900:]) < 40  # chance: 25


def test_spatial_lr_scale_gives_the_spatial_vit_its_own_learning_rate() -> None:
    from conftest import tiny_config

    from sfa_cache.models.vivit import ViViTFE
    from sfa_cache.train.optim import set_lr

    model = ViViTFE(tiny_config())
    opt = build_optimizer(model, "adamw", 1e-3, 0.05, spatial_lr_scale=0.1)
    set_lr(opt, 1e-3)
    spatial = {id(p) for p in model.spatial.parameters()}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= spatial or not ids & spatial  # never mixed
        assert group["lr"] == pytest.approx(1e-4 if ids & spatial else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    plain = build_optimizer(model, "sgd", 0.1, 0.0)
    assert len(plain.param_groups) == 2  # unchanged without a scale


def test_patience_counts_epochs_since_the_best() -> None:
    assert not patience_exhausted([50.0, 60.0, 55.0], 2)  # 2 epochs after the best at 60? only 1
    assert patience_exhausted([50.0, 60.0, 55.0, 60.0], 2)  # equalling the best is no improvement
    assert not patience_exhausted([50.0, 60.0, 55.0, 61.0], 2)
    assert not patience_exhausted([10.0, 10.0], None) and not patience_exhausted([10.0], 1)
    assert patience_exhausted([10.0, 10.0], 1)


def test_patience_waits_while_the_validation_loss_still_falls() -> None:
    top1 = [50.0, 60.0, 55.0, 60.0]  # top-1 on a plateau for 2 epochs
    assert not patience_exhausted(top1, 2, [1.5, 1.2, 1.1, 1.0])  # the loss still falls: not converged
    assert patience_exhausted(top1, 2, [1.5, 1.0, 1.1, 1.0])  # equalling the lowest loss is no improvement
    assert not patience_exhausted([50.0, 60.0, 55.0, 61.0], 2, [1.0, 0.9, 1.2, 1.3])  # top-1 alone is enough



def test_time_to_target_on_a_curve_of_paid_seconds() -> None:
    records = [{"train_seconds": 10.0, "val_top1": 40.0, "val_loss": 1.0},
               {"train_seconds": 12.0, "val_top1": 80.0, "val_loss": 0.8},
               {"train_seconds": 11.0, "val_top1": 90.0, "val_loss": 0.7}]
    curve = Curve.from_epochs(records, paid_before=100.0)  # e.g. Stage 1 and the extraction, paid first
    assert curve.seconds == (110.0, 122.0, 133.0) and curve.cost == 133.0 and curve.loss == (1.0, 0.8, 0.7)
    assert time_to_target(curve, 80.0) == 122.0 and time_to_target(curve, 85.0) == 133.0
    assert time_to_target(curve, 95.0) is None
    assert mean_if_all([10.0, 20.0]) == 15.0 and mean_if_all([10.0, None]) is None and mean_if_all([]) is None
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2))) and mean_std([5.0]) == (5.0, 0.0)


_HELD_16MIB = """
import ctypes, sys
import numpy as np
from sfa_cache.runtime import keep_freed_host_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = sys.argv[1] == "tuned" and keep_freed_host_memory()
batch = np.ones(16 << 20, np.uint8)  # a batch-sized block, the first of its size in this process
mapped = libc.mallinfo2().hblkhd  # bytes in blocks glibc mmapped apart (returned to the OS on free)
del batch
print(tuned, mapped >= 16 << 20, libc.mallinfo2().arena >= 16 << 20)
"""


def test_keep_freed_host_memory_serves_batch_blocks_from_a_heap_it_keeps() -> None:
    """With glibc's defaults a 16 MiB block is mmapped apart and unmapped on free (faulted in again
    by the next batch); after `keep_freed_host_memory` it comes from the heap, which keeps it."""
    import ctypes
    import subprocess
    import sys

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33")
    runs = {how: subprocess.run([sys.executable, "-c", _HELD_16MIB, how], capture_output=True, text=True)
            for how in ("default", "tuned")}
    assert all(r.returncode == 0 for r in runs.values()), [r.stderr[-2000:] for r in runs.values()]
    assert runs["default"].stdout.split() == ["False", "True", "False"]
    assert runs["tuned"].stdout.split() == ["True", "False", "True"]


def test_runs_bf16_fast_on_the_cpu_follows_its_instructions() -> None:
    """The demo's `--amp auto` picks bf16 on a CPU exactly when it has AVX512-BF16 or AMX, as the
    kernel reports the CPU's flags (not torch's own probes, which the code itself uses)."""
    from sfa_cache.runtime import runs_bf16_fast

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from (not Linux)")
    flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for f in line.split()}
    expected = bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    assert runs_bf16_fast(torch.device("cpu")) is expected
    assert runs_bf16_fast(torch.device("meta")) is False


@pytest.mark.gpu
def test_runs_bf16_fast_on_a_gpu_means_native_bf16() -> None:
    """Ampere and later run bf16 natively; older GPUs emulate it, no faster than float32."""
    from sfa_cache.runtime import runs_bf16_fast

    assert runs_bf16_fast(torch.device("cuda")) is (torch.cuda.get_device_capability() >= (8, 0))


def test_a_non_finite_loss_stops_training_naming_its_first_step_without_a_sync_per_step() -> None:
    """The loss stays on the device between reads: a NaN is still caught, at the next read, with
    the step where it first appeared."""
    from sfa_cache.train import loop
    from sfa_cache.train.optim import OptimConfig

    watch = loop.FiniteLossWatch(torch.device("cpu"))
    for step, value in enumerate([1.0, 0.5, float("nan"), float("inf"), 0.2]):
        watch.add(torch.tensor(value), step)
    with pytest.raises(FloatingPointError, match="loss is nan at step 2"):
        watch.check()

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(80, 4)
    x[50] = float("nan")  # batch 50 // 2 = 25: optimiser step 25 of 40
    batches = [(x[i : i + 2], torch.tensor([0, 1]), 0) for i in range(0, 80, 2)]
    trainer = loop.Trainer(model, OptimConfig(epochs=1, batch_size=2, optimizer="sgd", lr=0.01, warmup_epochs=0),
                           steps_per_epoch=len(batches), num_classes=3, device=torch.device("cpu"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 25"):
        trainer.train_epoch(batches)
    assert trainer.step == loop.SYNC_EVERY  # noticed at the first read after it, not at the step itself
