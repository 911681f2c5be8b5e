"""Stage 2 on cached features, the assembled model, evaluate / predict, ablations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_BACKBONE
from safetensors.torch import load_file

from sfa_cache.cache.feeds.dataset import CachedFeatureDataset
from sfa_cache.cache.format.read import FeatureCache
from sfa_cache.cli.main import cli
from sfa_cache.data.manifest import read_manifest
from sfa_cache.errors import SfaError
from sfa_cache.inference import predict
from sfa_cache.pipelines.ablate import run_ablation
from sfa_cache.pipelines.assemble import assemble
from sfa_cache.pipelines.evaluate import run_evaluate
from sfa_cache.pipelines.extract import run_extract
from sfa_cache.pipelines.job_configs import (
    EvaluateConfig,
    ExtractConfig,
    resolve_stage1_config,
    resolve_train_temporal_config,
)
from sfa_cache.pipelines.stage1 import run_stage1
from sfa_cache.pipelines.train_temporal import run_train_temporal
from sfa_cache.run.progress import read_metrics
from sfa_cache.run.record import read_run_record
from sfa_cache.run.weights import load_model
from sfa_cache.video.clips import ClipSpec, make_views


@pytest.fixture(scope="module")
def two_class(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """move_left vs flash_late clips, with a train cache (2 views x 8 frames) and an eval cache (8 frames)."""
    root = tmp_path_factory.mktemp("two")
    manifests = {}
    for split in ("train", "val"):
        lines = (synthetic / f"{split}.csv").read_text().splitlines()
        rows = [line for line in lines[1:] if line.endswith((",move_left", ",flash_late"))]
        manifests[split] = root / f"{split}.csv"
        manifests[split].write_text("path,label\n" + "".join(f"{synthetic}/{r}\n" for r in rows))
    return manifests


@pytest.fixture(scope="module")
def stage1_run(two_class: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, short Stage 1 on the two classes: its spatial ViT has learnt something to cache.

    (A randomly initialised ViT's CLS tokens barely depend on the pixels; Stage 2 on those cannot
    learn, which says nothing about Stage 2.)
    """
    out = tmp_path_factory.mktemp("s1") / "run"
    run_stage1(resolve_stage1_config(dict(
        train_manifest=str(two_class["train"]), out=str(out), backbone=TINY_BACKBONE, image_size=32, frames=4,
        temporal_depth=1, epochs=10, batch_size=4, optimizer="sgd", lr=0.05, warmup_epochs=1, num_workers=0,
        color_jitter_prob=0.0)))
    return out


@pytest.fixture(scope="module")
def caches(stage1_run: Path, two_class: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train cache (2 augmented views x 8 frames), eval caches of the val and of the train clips."""
    root = tmp_path_factory.mktemp("caches")
    common = dict(model=str(stage1_run), cache_root=str(root), frames=8, num_workers=0, progress=False)
    train = run_extract(ExtractConfig(manifest=str(two_class["train"]), views=2, **common)).cache_dir
    val = run_extract(ExtractConfig(manifest=str(two_class["val"]), mode="eval", **common)).cache_dir
    train_eval = run_extract(ExtractConfig(manifest=str(two_class["train"]), mode="eval", **common)).cache_dir
    return {"train": train, "val": val, "train_eval": train_eval}


def _cfg(caches: dict[str, Path], stage1: Path | None, out: Path, **over):
    values = dict(
        train_cache=str(caches["train"]),
        val_cache=str(caches["val"]),
        stage1=str(stage1) if stage1 else None,
        out=str(out),
        frames=8,
        epochs=8,
        batch_size=4,
        optimizer="adamw",
        lr=3e-3,
        warmup_epochs=1,
        num_workers=0,
        log_every=1,
    )
    values.update(over)
    return resolve_train_temporal_config(values)


def _locate(draw: torch.Tensor, full: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """Which cached view and frames a drawn [F, D] item came from."""
    for v in range(full.shape[0]):
        rows = [(full[v] == token).all(dim=-1).nonzero().flatten() for token in draw]
        if all(len(r) for r in rows):
            return v, tuple(int(r[0]) for r in rows)
    raise AssertionError("a drawn token is not in the cache")


def test_cached_dataset_views_frames_and_validity(caches: dict[str, Path]) -> None:
    cache = FeatureCache(caches["train"])
    ds = CachedFeatureDataset(cache, 4, train=True, seed=0)
    assert len(ds) == len(cache) and ds.skipped == 0
    tokens, label = ds[(0, 3)]
    assert tokens.shape == (4, 192) and tokens.dtype == torch.float32 and label == int(cache.labels[3])
    assert torch.equal(ds[(0, 3)][0], tokens)  # a pure function of (seed, epoch, clip)
    full = torch.from_numpy(cache.features(3).astype(np.float32))  # [2 views, 8, D]
    draws = [ds[(epoch, 3)][0] for epoch in range(12)]
    picked = {_locate(d, full) for d in draws}  # (view, cached frame positions) of each draw
    assert {v for v, _ in picked} == {0, 1}  # both cached views are used across epochs
    assert len({frames for _, frames in picked}) > 1  # temporal jitter over the cached frames
    assert all(list(f) == sorted(f) for _, f in picked)  # frame order is kept
    val = CachedFeatureDataset(FeatureCache(caches["val"]), 4, train=False)
    assert torch.equal(val[(0, 1)][0], val[(5, 1)][0])  # evaluation is fixed
    np.testing.assert_array_equal(val[(0, 1)][0].numpy(), FeatureCache(caches["val"]).features(1)[0, [1, 3, 5, 7]])
    with pytest.raises(SfaError, match="more than the 8 frames per clip"):
        CachedFeatureDataset(cache, 16, train=True)


def test_invalid_clips_are_skipped_and_counted(stage1_run: Path, videos, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"{videos[n]},move_left\n" for n in ("index24", "garbage", "textured"))
    )
    cache = FeatureCache(
        run_extract(
            ExtractConfig(
                model=str(stage1_run),
                manifest=str(manifest),
                cache_root=str(tmp_path),
                frames=4,
                num_workers=0,
                progress=False,
            )
        ).cache_dir
    )
    ds = CachedFeatureDataset(cache, 4, train=True)
    assert len(ds) == 2 and ds.skipped == 1
    assert all(torch.isfinite(ds[(0, i)][0]).all() for i in range(len(ds)))


def test_stage2_learns_and_assembles(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    # Evaluated on the centre views of the training clips: does Stage 2 fit its data?
    cached = {**caches, "val": caches["train_eval"]}
    # shards streamed by worker processes
    result = run_train_temporal(_cfg(cached, stage1_run, tmp_path / "s2", num_workers=2, cache_in_memory="off"))
    assert result["features"] == "stream"
    epochs = [r for r in read_metrics(tmp_path / "s2") if r["kind"] == "epoch"]
    assert len(epochs) == 8 and all("peak_mem_mb" in r for r in epochs)
    # Two classes: a model that only knows the prior scores ln 2. Stage 2 must do better.
    assert min(r["val_loss"] for r in epochs[-3:]) < math.log(2) - 0.1, [r["val_loss"] for r in epochs]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    record = read_run_record(tmp_path / "s2")
    assert record.kind == "stage2" and record.fingerprint == FeatureCache(caches["train"]).fingerprint
    assert resolve_train_temporal_config(record.train) == _cfg(cached, stage1_run, tmp_path / "s2", num_workers=2,
                                                               cache_in_memory="off")
    assert not any(k.startswith("spatial.") for k in load_file(str(tmp_path / "s2" / "model.safetensors")))
    assert result["params_trained"] == sum(
        v.numel() for v in load_file(str(tmp_path / "s2" / "model.safetensors")).values()
    )
    assembled = Path(result["assembled"])
    assert read_run_record(assembled).kind == "assembled"
    model = load_model(assembled)
    assert model.spatial is not None and model.temporal.num_frames == 8
    # The best epoch is a Stage-2 run of its own, assembled like the last one.
    best = assemble(tmp_path / "s2" / "best", tmp_path / "best-assembled")
    assert load_model(best).spatial is not None
    best_epoch = json.loads((tmp_path / "s2" / "best" / "best.json").read_text())["epoch"]
    assert max(r["val_top1"] for r in epochs) == epochs[best_epoch - 1]["val_top1"]


def test_stage1_initialisation_and_scratch(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    stage1 = load_file(str(stage1_run / "model.safetensors"))
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "init", epochs=1, lr=1e-9, warmup_epochs=0, assemble=False))
    init = load_file(str(tmp_path / "init" / "model.safetensors"))
    # lr ~ 0: the temporal blocks are still Stage 1's; position embeddings resized 4 -> 8 frames.
    torch.testing.assert_close(init["temporal.blocks.0.attn.qkv.weight"], stage1["temporal.blocks.0.attn.qkv.weight"])
    assert init["temporal.pos_embed"].shape[1] == 9 and stage1["temporal.pos_embed"].shape[1] == 5
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "scratch", epochs=1, lr=1e-9, warmup_epochs=0,
                            temporal_init="scratch", assemble=False))
    scratch = load_file(str(tmp_path / "scratch" / "model.safetensors"))
    assert not torch.allclose(scratch["temporal.blocks.0.attn.qkv.weight"], stage1["temporal.blocks.0.attn.qkv.weight"])
    # Without any Stage-1 run: scratch with an explicit depth; the cache's source gives the spatial weights.
    result = run_train_temporal(
        _cfg(caches, None, tmp_path / "bare", epochs=1, temporal_init="scratch", temporal_depth=3)
    )
    assert (
        load_model(result["assembled"]).cfg.temporal.depth == 3
        and len(load_model(result["assembled"]).temporal.blocks) == 3
    )


def test_fingerprint_mismatch_and_bad_settings_are_refused(caches: dict[str, Path], stage1_run: Path, synthetic: Path,
                                                           tmp_path: Path) -> None:
    other = tmp_path / "other-stage1"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((stage1_run / name).read_bytes())
    state = load_file(str(other / "model.safetensors"))
    state["spatial.backbone.norm.weight"] = state["spatial.backbone.norm.weight"] + 1
    from safetensors.torch import save_file

    save_file(state, str(other / "model.safetensors"))  # no fingerprint metadata: it is recomputed
    with pytest.raises(
        SfaError,
        match=r"the Stage-1 run .*other-stage1 \(spatial fingerprint sha256:\w+\) is not the model "
        r"the cache .* was extracted with \(fingerprint sha256:\w+\)",
    ):
        run_train_temporal(_cfg(caches, other, tmp_path / "x"))
    with pytest.raises(SfaError, match="--frames 16 is more than the 8 frames per clip"):
        run_train_temporal(_cfg(caches, stage1_run, tmp_path / "y", frames=16))
    with pytest.raises(SfaError, match="needs --stage1"):
        run_train_temporal(_cfg(caches, None, tmp_path / "z"))
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))
    r = CliRunner().invoke(cli, ["train-temporal", "--train-cache", str(caches["train"]), "--stage1", str(stage1_run),
                                 "--out", str(tmp_path / "w"), "--frames", "64"])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 1 and "more than the 8 frames" in r.output


def test_resume_matches_an_uninterrupted_run(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "full", epochs=3, mixup=0.2, assemble=False))
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "split", epochs=3, mixup=0.2, assemble=False, stop_after=2))
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "split", epochs=3, mixup=0.2, assemble=False), resume=True)
    a, b = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "split" / "model.safetensors")),
    )
    for k in a:
        assert torch.equal(a[k], b[k]), k
    def results(run: Path) -> list[dict]:  # metrics without the wall-clock and memory figures
        return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k and k != "peak_mem_mb"}
                for r in read_metrics(run)]

    assert results(tmp_path / "full") == results(tmp_path / "split")


def test_features_in_ram_and_streamed_train_the_same_weights(caches: dict[str, Path], stage1_run: Path,
                                                              tmp_path: Path) -> None:
    """Where the features live changes speed, never the batches: equal weights and metrics."""
    runs = {"ram": dict(cache_in_memory="ram"), "stream": dict(cache_in_memory="off", num_workers=2),
            "stream-inline": dict(cache_in_memory="off", num_workers=0)}
    for name, over in runs.items():
        last = run_train_temporal(_cfg(caches, stage1_run, tmp_path / name, epochs=3, mixup=0.2, assemble=False,
                                       shuffle_window=1, **over))
        assert last["features"] == ("ram" if name == "ram" else "stream")
    weights = {name: load_file(str(tmp_path / name / "model.safetensors")) for name in runs}
    for k in weights["ram"]:
        assert torch.equal(weights["ram"][k], weights["stream"][k]) and torch.equal(weights["ram"][k],
                                                                                    weights["stream-inline"][k]), k

    def results(run: Path) -> list[dict]:  # metrics without the wall-clock and memory figures
        return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k and k != "peak_mem_mb"}
                for r in read_metrics(run)]

    assert results(tmp_path / "ram") == results(tmp_path / "stream") == results(tmp_path / "stream-inline")


def test_patience_stops_early_and_a_resume_stays_stopped(
    caches: dict[str, Path], stage1_run: Path, tmp_path: Path
) -> None:
    # At a negligible learning rate validation top-1 cannot improve: patience 2 ends the run after epoch 3 of 20.
    cfg = _cfg(caches, stage1_run, tmp_path / "s2", epochs=20, patience=2, lr=1e-12, warmup_epochs=0)
    last = run_train_temporal(cfg)
    epochs = [r for r in read_metrics(tmp_path / "s2") if r["kind"] == "epoch"]
    assert len(epochs) == 3 and last["stopped_early"] and last["complete"] and "assembled" in last
    again = run_train_temporal(cfg, resume=True)  # nothing left to train: no epoch runs, and it is complete
    assert again["complete"] and len([r for r in read_metrics(tmp_path / "s2") if r["kind"] == "epoch"]) == 3
    with pytest.raises(SfaError, match="--patience stops on validation top-1"):
        run_train_temporal(_cfg(caches, stage1_run, tmp_path / "novl", patience=2, val_cache=None))


def test_cache_path_and_raw_video_path_agree(caches: dict[str, Path], stage1_run: Path, two_class: dict[str, Path],
                                            tmp_path: Path) -> None:
    """Parity: cache -> adapter -> temporal equals the assembled model on the raw video."""
    result = run_train_temporal(_cfg(caches, stage1_run, tmp_path / "s2", epochs=2, adapter="residual"))
    stage2 = load_model(tmp_path / "s2", with_spatial=False).eval()
    assembled = load_model(result["assembled"]).eval()
    cache = FeatureCache(caches["val"])
    entries = read_manifest(two_class["val"], cache.classes).entries
    s = assembled.cfg.spatial
    spec = ClipSpec(frames=8, image_size=s.image_size, mean=s.mean, std=s.std)
    with torch.no_grad():
        for clip in range(len(cache)):
            from_cache = stage2(torch.from_numpy(cache.features(clip)[0].astype(np.float32))[None])
            from_video = assembled(make_views(entries[clip].path, spec)[0])
            torch.testing.assert_close(from_cache, from_video, rtol=5e-3, atol=5e-3)
    # The residual adapter starts as the identity (fc2 = 0): non-zero now, so parity covers a trained adapter.
    assert load_file(str(tmp_path / "s2" / "model.safetensors"))["adapter.fc2.weight"].abs().max() > 0


def test_evaluate_and_predict(caches: dict[str, Path], stage1_run: Path, two_class: dict[str, Path], videos,
                              tmp_path: Path) -> None:
    result = run_train_temporal(_cfg(caches, stage1_run, tmp_path / "s2", epochs=2))
    manifest = tmp_path / "val-plus-broken.csv"
    move_left = [line for line in two_class["val"].read_text().splitlines() if line.endswith(",move_left")]
    manifest.write_text("path,label\n" + "\n".join(move_left) + f"\n{videos['garbage']},move_left\n")
    metrics = run_evaluate(
        EvaluateConfig(run=result["assembled"], manifest=str(manifest), clips=2, crops=3, num_workers=0)
    )
    assert metrics["videos"] == 2 and metrics["failed"] == 1 and metrics["clips"] == 2 and metrics["crops"] == 3
    out = Path(metrics["out"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"] and list(saved["per_class_top1"]) == ["flash_late", "move_left"]
    assert saved["per_class_top1"]["flash_late"] is None  # absent from this set
    assert saved["per_class_top1"]["move_left"] == metrics["top1"]
    confusion = [line.split(",") for line in (out / "confusion.csv").read_text().splitlines()]
    assert confusion[0] == ["true \\ predicted", "flash_late", "move_left"] and confusion[1][1:] == ["0", "0"]
    assert sum(int(c) for c in confusion[2][1:]) == 2 and int(confusion[2][2]) == round(metrics["top1"] / 50)
    assert len((out / "failures.jsonl").read_text().splitlines()) == 1
    # 1 clip x 1 crop at the cached frame count is the eval cache's view: the same per-video predictions.
    run_evaluate(
        EvaluateConfig(run=result["assembled"], manifest=str(two_class["val"]), num_workers=2, out=str(tmp_path / "e1"))
    )
    rows = [line.split(",") for line in (tmp_path / "e1" / "predictions.csv").read_text().splitlines()[1:]]
    stage2 = load_model(tmp_path / "s2", with_spatial=False).eval()
    cache = FeatureCache(caches["val"])
    assert [int(r[0]) for r in rows] == cache.clip_index.tolist()
    with torch.no_grad():
        probs = stage2(
            torch.from_numpy(np.stack([cache.features(i)[0] for i in range(len(cache))]).astype(np.float32))
        ).softmax(-1)
    assert [r[3] for r in rows] == [cache.classes[int(i)] for i in probs.argmax(-1)]
    np.testing.assert_allclose([float(r[4]) for r in rows], probs.max(-1).values.numpy(), atol=5e-3)

    first = read_manifest(two_class["val"], ["flash_late", "move_left"]).entries[0].path
    preds = predict(result["assembled"], [first, videos["missing"]], top_k=5)
    assert len(preds[0]["top"]) == 2 and abs(sum(t["prob"] for t in preds[0]["top"]) - 1) < 1e-4  # k clipped to 2
    assert preds[0]["top"][0]["prob"] >= preds[0]["top"][1]["prob"] and preds[1]["error"] == "file not found"
    r = CliRunner().invoke(
        cli, ["predict", "--run", result["assembled"], str(videos["index24"]), "--json", "--top-k", "1"]
    )
    assert r.exit_code == 0 and len(json.loads(r.output)["top"]) == 1
    r = CliRunner().invoke(cli, ["predict", "--run", str(tmp_path / "s2"), str(videos["index24"])])
    assert r.exit_code == 1 and "is a Stage-2 run" in r.output


def test_ablation_grid_runs_once_and_tabulates(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({
        "base": {"train_cache": str(caches["train"]), "val_cache": str(caches["val"]), "stage1": str(stage1_run),
                 "frames": 8, "epochs": 1, "batch_size": 4, "num_workers": 0, "optimizer": "adamw", "lr": 1e-3},
        "runs": [{"name": "I", "adapter": "none", "temporal_init": "scratch"}, {"name": "V", "adapter": "mlp"}],
    }))
    rows = run_ablation(grid, tmp_path / "abl")
    assert [r["name"] for r in rows] == ["I", "V"] and all(r["status"] == "done" for r in rows)
    assert rows[0]["params_trained"] < rows[1]["params_trained"]  # V trains the adapter too
    assert all(r["top1"] is not None and r["peak_mem_mb"] > 0 and r["train_seconds"] > 0 for r in rows)
    assert all(r["features"] == "ram (shared)" for r in rows)  # one copy loaded by the parent, mapped by both
    csv_lines = (tmp_path / "abl" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith(
        "name,status,top1,top5,train_seconds,peak_mem_mb,params_trained"
    )
    assert (tmp_path / "abl" / "results.md").read_text().count("| done |") == 2
    assert (tmp_path / "abl" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the ablation figure
    stamps = {n: (tmp_path / "abl" / n / "result.json").stat().st_mtime_ns for n in ("I", "V")}
    assert run_ablation(grid, tmp_path / "abl") == rows  # the rerun skips both
    assert {n: (tmp_path / "abl" / n / "result.json").stat().st_mtime_ns for n in ("I", "V")} == stamps
    grid.write_text(
        json.dumps({"base": {"train_cache": str(caches["train"]), "stage1": str(stage1_run), "adaptr": "mlp"}})
    )
    with pytest.raises(SfaError, match="unknown key"):
        run_ablation(grid, tmp_path / "abl2")
    grid.write_text(json.dumps({"base": {"train_cache": str(caches["train"]), "stage1": str(stage1_run)},
                                "product": {"frames": [4, 16]}}))
    with pytest.raises(SfaError, match="entry frames=16: --frames 16 is more than the 8 frames"):
        run_ablation(grid, tmp_path / "abl3")  # checked before anything runs
    assert not (tmp_path / "abl3").exists()


def test_assemble_command_and_the_assembled_model_as_an_extraction_source(
    caches: dict[str, Path], stage1_run: Path, two_class: dict[str, Path], tmp_path: Path
) -> None:
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "s2", epochs=3, stop_after=1))  # unfinished: not assembled
    assert not (tmp_path / "s2" / "assembled").exists()
    r = CliRunner().invoke(cli, ["assemble", str(tmp_path / "s2"), "--out", str(tmp_path / "asm")])
    assert r.exit_code == 0 and r.output.strip() == str(tmp_path / "asm")
    assert read_run_record(tmp_path / "asm").kind == "assembled"
    # Same spatial weights, same settings, same videos: the eval cache is found, not recomputed.
    again = run_extract(
        ExtractConfig(
            model=str(tmp_path / "asm"),
            manifest=str(two_class["val"]),
            mode="eval",
            frames=8,
            cache_root=str(caches["val"].parent),
            num_workers=0,
            progress=False,
        )
    )
    assert again.reused and again.cache_dir == caches["val"]
    r = CliRunner().invoke(cli, ["assemble", str(stage1_run)])
    assert r.exit_code == 1 and "is not a Stage-2 run" in r.output


def test_eval_cache_with_three_crops_is_evaluated_on_the_centre_crop(stage1_run: Path, two_class: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    cache = FeatureCache(run_extract(ExtractConfig(model=str(stage1_run), manifest=str(two_class["val"]), mode="eval",
                                                   eval_crops=3, frames=8, cache_root=str(tmp_path), num_workers=0,
                                                   progress=False)).cache_dir)
    ds = CachedFeatureDataset(cache, 8, train=False)
    np.testing.assert_array_equal(ds[(0, 2)][0].numpy(), cache.features(2)[1].astype(np.float32))
    assert not np.array_equal(cache.features(2)[0], cache.features(2)[1])


def test_ablation_survives_a_killed_entry_and_refuses_stale_results(caches: dict[str, Path], stage1_run: Path,
                                                                    tmp_path: Path) -> None:
    import multiprocessing
    import os
    import signal
    import threading
    import time

    base = {"train_cache": str(caches["train"]), "stage1": str(stage1_run), "frames": 8, "batch_size": 4,
            "num_workers": 0, "optimizer": "adamw", "lr": "1e-3"}  # a number written as a string, as YAML gives it
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps({"base": base, "runs": [{"name": "slow", "epochs": 500}, {"name": "quick", "epochs": 1}]})
    )
    rows: list = []
    worker = threading.Thread(target=lambda: rows.extend(run_ablation(grid, tmp_path / "abl")))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "abl" / "slow" / "metrics.jsonl").is_file():
        time.sleep(0.1)
    victim = [p for p in multiprocessing.active_children() if p.name == "ablate-slow"]
    assert victim, "the slow entry was not running"
    os.kill(victim[0].pid, signal.SIGKILL)  # as the OOM killer would
    worker.join(timeout=300)
    assert [r["name"] for r in rows] == ["slow", "quick"]
    assert rows[0]["status"] == "failed: the process ended with exit code -9" and rows[1]["status"] == "done"
    assert rows[1]["lr"] == 1e-3
    grid.write_text(json.dumps({"base": {**base, "lr": 2e-3}, "runs": [{"name": "quick", "epochs": 1}]}))
    with pytest.raises(SfaError, match="finished with other settings"):
        run_ablation(grid, tmp_path / "abl")
    for bad, match in (({"product": {"frames": 8}}, "product.frames must be a non-empty list"),
                       ({"runs": [{"stop_after": 1}]}, "must not set 'stop_after'"),
                       ({"runs": [{"epochs": "many"}]}, r"epochs: expected int, got 'many'")):
        grid.write_text(json.dumps({"base": base, **bad}))
        with pytest.raises(SfaError, match=match):
            run_ablation(grid, tmp_path / "abl-bad")


def test_assemble_never_overwrites_another_run(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "s2", epochs=1, assemble=False))
    before = (stage1_run / "model.safetensors").read_bytes()
    r = CliRunner().invoke(cli, ["assemble", str(tmp_path / "s2"), "--out", str(stage1_run)])
    assert r.exit_code == 1 and "holds a stage1 run" in r.output
    assert (stage1_run / "model.safetensors").read_bytes() == before
    assert CliRunner().invoke(cli, ["assemble", str(tmp_path / "s2")]).exit_code == 0
    (tmp_path / "s2" / "assembled" / "eval").mkdir()
    assert CliRunner().invoke(cli, ["assemble", str(tmp_path / "s2")]).exit_code == 0  # replaces an assembled model
    assert not (tmp_path / "s2" / "assembled" / "eval").exists()


def test_train_temporal_from_its_own_config_json(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    """`--config RUN/config.json --out NEW` trains the same Stage 2 again: the same weights."""
    first = CliRunner().invoke(cli, [
        "train-temporal", "--train-cache", str(caches["train"]), "--val-cache", str(caches["val"]), "--stage1",
        str(stage1_run), "--frames", "4", "--epochs", "2", "--batch-size", "4", "--optimizer", "adamw", "--lr", "3e-3",
        "--num-workers", "0", "--no-assemble", "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["train-temporal", "--config", str(tmp_path / "a" / "config.json"),
                                     "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / "assembled").exists()  # --no-assemble came back from the file


def test_ema_weights_are_kept_validated_and_resumed(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    """--ema: OUT/ema holds the weights' moving average, validated each epoch; a resumed run ends
    with the same average as an uninterrupted one; a decay near 0 follows the weights exactly."""
    common = dict(epochs=3, mixup=0.2, assemble=False, ema=0.9)
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "full", **common))
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "split", stop_after=1, **common))
    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "split", **common), resume=True)
    full, split = (load_file(str(tmp_path / r / "ema" / "model.safetensors")) for r in ("full", "split"))
    assert full.keys() == split.keys() and all(torch.equal(full[k], split[k]) for k in full)
    model = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert any(not torch.allclose(full[k], model[k]) for k in model)  # an average, not the last weights
    epochs = [r for r in read_metrics(tmp_path / "full") if r["kind"] == "epoch"]
    assert all(0 <= r["ema_val_top1"] <= 100 for r in epochs)
    assert json.loads((tmp_path / "full" / "ema" / "ema.json").read_text()) == {
        "decay": 0.9, "epoch": 3, "step": epochs[-1]["step"], "ema_val_top1": epochs[-1]["ema_val_top1"],
        "ema_val_top5": epochs[-1]["ema_val_top5"]}
    assert read_run_record(tmp_path / "full" / "ema").kind == "stage2"  # a run directory of its own

    run_train_temporal(_cfg(caches, stage1_run, tmp_path / "follow", **{**common, "ema": 1e-9}))
    ema = load_file(str(tmp_path / "follow" / "ema" / "model.safetensors"))
    last = load_file(str(tmp_path / "follow" / "model.safetensors"))
    assert all(torch.allclose(ema[k], last[k], atol=1e-6) for k in last)
    record = [r for r in read_metrics(tmp_path / "follow") if r["kind"] == "epoch"][-1]
    assert record["ema_val_top1"] == record["val_top1"]
    with pytest.raises(SfaError, match="--ema is a decay in"):
        _cfg(caches, stage1_run, tmp_path / "bad", ema=1.0).optim.validate()


def test_plot_overlays_runs(caches: dict[str, Path], stage1_run: Path, tmp_path: Path) -> None:
    """`sfa-cache plot`: the curves come from each run's epoch records; bad input is one line."""
    from sfa_cache.pipelines.plot_runs import run_series

    for name in ("a", "b"):
        run_train_temporal(_cfg(caches, stage1_run, tmp_path / name, epochs=2, assemble=False))
    epochs = [r for r in read_metrics(tmp_path / "a") if r["kind"] == "epoch"]
    series = run_series(tmp_path / "a", "seconds")
    assert series["x"] == pytest.approx([epochs[0]["train_seconds"], epochs[0]["train_seconds"]
                                         + epochs[1]["train_seconds"]])
    assert series["val_top1"] == [r["val_top1"] for r in epochs] and run_series(tmp_path / "a", "epoch")["x"] == [1, 2]
    runner = CliRunner()
    for out in ("curves.png", "curves.pdf"):
        r = runner.invoke(cli, ["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--x", "seconds",
                                "--out", str(tmp_path / out), "--label", "first", "--label", "second"])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "curves.pdf").read_bytes()[:4] == b"%PDF"
    for args, message in ((["--out", str(tmp_path / "c.png"), str(tmp_path)], "is not a training run"),
                          ([str(tmp_path / "a"), "--out", str(tmp_path / "c.jpg")], "use one of .png"),
                          ([str(tmp_path / "a"), "--label", "x", "--label", "y", "--out", str(tmp_path / "c.png")],
                           "2 --label for 1 runs")):
        r = runner.invoke(cli, ["plot", *args])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
