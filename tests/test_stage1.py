"""Stage 1 end to end on real videos: learning, the run directory, resume, presets, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_BACKBONE
from safetensors.torch import load_file

from sfa_cache.cli.main import cli
from sfa_cache.errors import SfaError
from sfa_cache.pipelines.job_configs import Stage1Config, resolve_stage1_config
from sfa_cache.pipelines.stage1 import run_stage1
from sfa_cache.run.progress import load_train_state, read_metrics
from sfa_cache.run.record import read_run_record
from sfa_cache.run.weights import load_model
from sfa_cache.settings_io import config_to_dict


@pytest.fixture(scope="module")
def two_class(synthetic: Path, tmp_path_factory) -> Path:
    """move_left vs flash_late rows of the synthetic training set (an easy, overfittable task)."""
    lines = (synthetic / "train.csv").read_text().splitlines()
    rows = [line for line in lines[1:] if line.endswith((",move_left", ",flash_late"))]
    path = tmp_path_factory.mktemp("two") / "two.csv"
    path.write_text("path,label\n" + "\n".join(f"{synthetic}/{r}" for r in rows) + "\n")
    return path


def _cfg(train: Path, out: Path, **over) -> Stage1Config:
    values = dict(
        train_manifest=str(train), val_manifest=str(train), out=str(out), backbone=TINY_BACKBONE,
        image_size=32, frames=4, temporal_depth=1, epochs=3, batch_size=4, optimizer="sgd", lr=0.05,
        warmup_epochs=1, num_workers=0, color_jitter_prob=0.0, log_every=1,
    )
    values.update(over)
    return resolve_stage1_config(values)


def test_tiny_stage1_lowers_the_loss_and_writes_a_loadable_run(two_class: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_stage1(_cfg(two_class, out, epochs=10))
    # The zero-initialised head predicts uniformly at step 0: loss ln(2). Training must beat it.
    val_losses = [r["val_loss"] for r in read_metrics(out) if r["kind"] == "epoch"]
    assert len(val_losses) == 10
    assert min(val_losses[-3:]) < math.log(2) - 0.1, val_losses
    for name in ("config.json", "model.safetensors", "train_state.pt", "metrics.jsonl", "classes.json"):
        assert (out / name).is_file(), name
    record = read_run_record(out)
    assert record.kind == "stage1" and record.classes == ["flash_late", "move_left"]
    assert resolve_stage1_config(record.train) == _cfg(two_class, out, epochs=10)  # config.json feeds back
    assert record.train["optim"]["lr"] == 0.05 and record.versions["timm"]
    assert json.loads((out / "classes.json").read_text()) == ["flash_late", "move_left"]
    train_records = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert train_records and {"loss", "lr", "clips_per_s", "step"} <= set(train_records[0])
    # The run loads back: same weights, same function.
    model = load_model(out).eval()
    state = load_train_state(out)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])
    x = torch.randn(1, 4, 3, 32, 32)
    assert model(x).shape == (1, 2)
    assert load_model(out, num_frames=16)(torch.randn(1, 16, 3, 32, 32)).shape == (1, 2)


def test_resume_matches_an_uninterrupted_run(synthetic: Path, tmp_path: Path) -> None:
    train = synthetic / "train.csv"
    kw = dict(epochs=3, mixup=0.2, drop_path=0.1, label_smoothing=0.1)
    run_stage1(_cfg(train, tmp_path / "straight", **kw))
    run_stage1(_cfg(train, tmp_path / "split", stop_after=1, **kw))
    assert load_train_state(tmp_path / "split")["epoch"] == 1
    # A crash after metrics were appended but before the state was saved leaves extra records:
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "epoch", "epoch": 2, "step": 10_000}) + "\n")
    run_stage1(_cfg(train, tmp_path / "split", **kw), resume=True)
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)

    def strip(records):
        return [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in records]

    assert strip(read_metrics(tmp_path / "straight")) == strip(read_metrics(tmp_path / "split"))


def test_workers_do_not_change_the_result(synthetic: Path, tmp_path: Path) -> None:
    """Items are seeded by (seed, epoch, index): decoding in 2 worker processes, under a deadline
    (the default) or in a plain DataLoader (--decode-timeout 0), changes nothing."""
    train = synthetic / "train.csv"
    run_stage1(_cfg(train, tmp_path / "w0", epochs=1, num_workers=0))
    run_stage1(_cfg(train, tmp_path / "w2", epochs=1, num_workers=2))
    run_stage1(_cfg(train, tmp_path / "w2-dataloader", epochs=1, num_workers=2, decode_timeout=0))
    a = load_file(str(tmp_path / "w0" / "model.safetensors"))
    for other in ("w2", "w2-dataloader"):
        b = load_file(str(tmp_path / other / "model.safetensors"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=f"{other}: {k}")


def test_broken_videos_are_recorded_and_skipped(synthetic: Path, videos, tmp_path: Path) -> None:
    rows = (synthetic / "train.csv").read_text().splitlines()[1:9]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(f"{synthetic}/{r}" for r in rows)
                        + f"\n{videos['garbage']},move_up\n{videos['missing']},move_up\n")
    out = tmp_path / "run"
    last = run_stage1(_cfg(manifest, out, epochs=1))
    assert last["train_clips"] == 8 and last["train_dropped"] == 2 and last["val_dropped"] == 2
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["row"] for f in failures} == {8, 9}


def test_preset_then_explicit_flags() -> None:
    cfg = resolve_stage1_config(dict(train_manifest="t.csv", out="o", preset="ssv2", batch_size=16))
    assert cfg.optim.label_smoothing == 0.3 and cfg.optim.mixup == 0.3 and cfg.drop_path == 0.3
    assert cfg.color_jitter_prob == 0.0 and cfg.flip_prob == 0.0 and cfg.optim.epochs == 35  # left/right classes
    assert resolve_stage1_config(dict(train_manifest="t.csv", out="o", preset="k400")).flip_prob == 0.5
    assert cfg.optim.lr == pytest.approx(0.5 * 16 / 128)  # linear scaling from the paper's batch 128
    cfg = resolve_stage1_config(dict(train_manifest="t.csv", out="o", preset="ssv2", lr=0.01, mixup=0.0))
    assert cfg.optim.lr == 0.01 and cfg.optim.mixup == 0.0 and cfg.optim.label_smoothing == 0.3
    with pytest.raises(SfaError, match="unknown preset"):
        resolve_stage1_config(dict(train_manifest="t.csv", out="o", preset="imagenet"))
    # RandAugment as the paper's EPIC-Kitchens / SSv2 recipes (supplementary Table 1), off elsewhere
    ra = {p: resolve_stage1_config(dict(train_manifest="t.csv", out="o", preset=p)) for p in ("epic", "ssv2", "k400")}
    assert [(c.randaugment_ops, c.randaugment_magnitude) for c in ra.values()] == [(2, 15), (2, 20), (0, 0)]
    with pytest.raises(SfaError, match="randaugment-magnitude in 0-30"):
        resolve_stage1_config(dict(train_manifest="t.csv", out="o", randaugment_ops=2,
                                   randaugment_magnitude=31)).validate()


def test_a_saved_config_resolves_to_the_same_config() -> None:
    """A run's config.json 'train' section (nested optim) passed back gives the same config; flags still win."""
    cfg = resolve_stage1_config(
        dict(train_manifest="t.csv", out="o", preset="ssv2", batch_size=16, epochs=3, frames=16)
    )
    saved = json.loads(json.dumps(config_to_dict(cfg)))  # as it is on disk
    assert resolve_stage1_config(saved) == cfg
    nested = resolve_stage1_config(dict(train_manifest="t.csv", out="o", optim={"lr": 0.5, "epochs": 3}))
    assert nested.optim.lr == 0.5 and nested.optim.epochs == 3  # once reset to the defaults
    assert resolve_stage1_config({**saved, "lr": 0.25, "out": "p"}).optim.lr == 0.25  # a flag over the file
    assert resolve_stage1_config({**saved, "lr": 0.25}).optim.epochs == 3
    with pytest.raises(SfaError, match="unknown key.*optim.lr_peak"):
        resolve_stage1_config(dict(train_manifest="t.csv", out="o", optim={"lr_peak": 0.5}))


# --- the command line ---------------------------------------------------------------------------

def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _base(synthetic: Path, out: Path) -> list[str]:
    return ["stage1", "--train-manifest", str(synthetic / "train.csv"), "--out", str(out),
            "--backbone", TINY_BACKBONE, "--image-size", "32", "--frames", "2", "--temporal-depth", "1",
            "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--log-every", "0"]


def _assert_one_line_error(result, match: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and match in errors[0], result.output


@pytest.mark.parametrize("args, match", [
    (["--backbone", "vit_nope_patch16_224"], "unknown backbone 'vit_nope_patch16_224'"),
    (["--image-size", "40"], "image size 40 is not divisible"),
    (["--frames", "0"], "--frames must be >= 1"),
    (["--classes", "CLASSES"], "label 'move_up' is not in the class list"),
    (["--backbone-weights", "JUNK"], "cannot read weights file"),
    (["--temporal-preset", "B"], "temporal preset B has width 768 but the spatial backbone gives 192"),
])
def test_cli_bad_input_is_one_line_and_creates_nothing(
    synthetic: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    (tmp_path / "classes.txt").write_text("move_left\nmove_right\n")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    args = [
        a.replace("CLASSES", str(tmp_path / "classes.txt")).replace("JUNK", str(tmp_path / "junk.pth")) for a in args
    ]
    out = tmp_path / "run"
    _assert_one_line_error(_run(_base(synthetic, out) + args), match)
    assert not out.exists()


@pytest.mark.parametrize("flag, name, match", [
    ("--train-manifest", "nope.csv", "manifest not found"),
    ("--train-wds", "nope-{000..009}.tar", "no tar shard matches"),
    ("--train-h5", "nope.h5", "cannot open HDF5 file"),
])
def test_cli_missing_input(tmp_path: Path, flag: str, name: str, match: str) -> None:
    result = _run(["stage1", flag, str(tmp_path / name), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and match in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_cli_refuses_to_overwrite_a_run_and_resumes_only_the_same_run(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(_base(synthetic, out))
    assert first.exit_code == 0, first.output
    before = (out / "model.safetensors").read_bytes()
    _assert_one_line_error(_run(_base(synthetic, out)), "already holds a run; pass --resume")
    _assert_one_line_error(_run(_base(synthetic, out) + ["--lr", "0.5", "--resume"]), "differs in: optim.lr")
    assert (out / "model.safetensors").read_bytes() == before  # nothing overwritten
    done = _run(_base(synthetic, out) + ["--resume"])  # already finished: a no-op
    assert done.exit_code == 0 and (out / "model.safetensors").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    _assert_one_line_error(_run(_base(synthetic, tmp_path / "other")), "not a run directory")


def test_help_lists_every_command_and_each_has_help() -> None:
    result = _run(["--help"])
    assert result.exit_code == 0
    commands = list(cli.commands)
    assert {"stage1", "make-synthetic", "extract", "cache"} <= set(commands)
    invocations = [[name] for name in commands] + [["cache", sub] for sub in cli.commands["cache"].commands]
    assert ["cache", "verify"] in invocations and ["cache", "info"] in invocations
    for names in invocations:
        assert names[-1] in (result.output if len(names) == 1 else _run([names[0], "--help"]).output)
        sub = _run([*names, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output, names


def test_console_script_error_exit_code(tmp_path: Path) -> None:
    """The installed `sfa-cache` prints one 'Error:' line on stderr and exits 1 for user mistakes."""
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\na.mp4,x\n")
    exe = Path(sys.executable).with_name("sfa-cache")
    proc = subprocess.run([str(exe), "stage1", "--train-manifest", str(csv), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: none of the 1 videos")
    assert "Traceback" not in proc.stderr


def test_bf16_autocast_trains_on_cpu(synthetic: Path, tmp_path: Path) -> None:
    last = run_stage1(_cfg(synthetic / "train.csv", tmp_path / "bf16", epochs=1, amp="bf16"))
    assert math.isfinite(last["train_loss"]) and math.isfinite(last["val_loss"])


def test_fp16_needs_cuda(synthetic: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = _run(_base(synthetic, tmp_path / "r") + ["--amp", "fp16", "--device", "cpu"])
    _assert_one_line_error(result, "--amp fp16 needs a CUDA device")


@pytest.mark.gpu
def test_stage1_on_cuda_with_fp16_channels_last(synthetic: Path, tmp_path: Path) -> None:
    last = run_stage1(
        _cfg(synthetic / "train.csv", tmp_path / "cuda", epochs=1, amp="fp16", channels_last=True, device="cuda")
    )
    assert math.isfinite(last["train_loss"])


def test_best_epoch_is_kept_as_a_run_of_its_own(synthetic: Path, tmp_path: Path) -> None:
    """OUT/best holds the weights of the epoch with the best validation top-1 (the first such), as a
    run directory that evaluate accepts; equal to a run of the same settings stopped there."""
    args = [*_base(synthetic, tmp_path / "full"), "--val-manifest", str(synthetic / "val.csv"), "--epochs", "4",
            "--lr", "0.05", "--optimizer", "adamw"]
    assert _run(args).exit_code == 0
    top1 = [r["val_top1"] for r in read_metrics(tmp_path / "full") if r["kind"] == "epoch"]
    best = json.loads((tmp_path / "full" / "best" / "best.json").read_text())
    assert best["epoch"] == top1.index(max(top1)) + 1 and best["val_top1"] == max(top1)
    cut = [a if a != str(tmp_path / "full") else str(tmp_path / "cut") for a in args]
    assert _run([*cut, "--stop-after", str(best["epoch"])]).exit_code == 0  # the same run, stopped at the best
    a = load_file(str(tmp_path / "full" / "best" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    evaluated = _run(["evaluate", "--run", str(tmp_path / "full" / "best"), "--manifest", str(synthetic / "val.csv"),
                      "--num-workers", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "full" / "best" / "eval").glob("*/metrics.json").__next__().read_text())["top1"] \
        == pytest.approx(best["val_top1"])
    assert not list((tmp_path / "full").glob(".best*"))  # no staging folder left behind
