"""`--config FILE` on stage1, extract, evaluate, train-temporal and demo: a run's own config.json
reproduces it, a YAML file of flags' keys works, flags override the file, bad keys are one line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import TINY_BACKBONE
from safetensors.torch import load_file

from sfa_cache.cli.main import cli
from sfa_cache.run.record import read_run_record


def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _one_line_error(result, match: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and match in errors[0], result.output


def _last_json(output: str) -> dict:
    """The JSON summary a command prints last (a progress bar may share its line in CliRunner)."""
    last = output.strip().splitlines()[-1]
    return json.loads(last[last.index("{"):])


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_a_runs_config_json_reproduces_it_and_flags_override(synthetic: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    first = _run(["stage1", "--train-manifest", str(synthetic / "train.csv"), "--out", str(a),
                  "--backbone", TINY_BACKBONE, "--image-size", "32", "--frames", "2", "--temporal-depth", "1",
                  "--epochs", "1", "--batch-size", "8", "--lr", "0.02", "--num-workers", "0", "--log-every", "0",
                  "--seed", "3"])
    assert first.exit_code == 0, first.output
    again = _run(["stage1", "--config", str(a / "config.json"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    assert _same_weights(a, tmp_path / "b")  # same settings, same seed: the same run
    assert read_run_record(tmp_path / "b").train == {**read_run_record(a).train, "out": str(tmp_path / "b")}
    varied = _run(["stage1", "--config", str(a / "config.json"), "--out", str(tmp_path / "c"), "--seed", "4",
                   "--lr", "0.05"])
    assert varied.exit_code == 0, varied.output
    train = read_run_record(tmp_path / "c").train
    assert train["seed"] == 4 and train["optim"]["lr"] == 0.05 and train["optim"]["batch_size"] == 8
    assert not _same_weights(a, tmp_path / "c")


def test_yaml_settings_with_unknown_or_missing_keys_are_one_line_errors(synthetic: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"train_manifest: {synthetic / 'train.csv'}\nbackbone: {TINY_BACKBONE}\nlearning_rate: 0.1\n")
    result = _run(["stage1", "--config", str(bad), "--out", str(tmp_path / "r")])
    _one_line_error(result, "unknown key(s) learning_rate")
    assert not (tmp_path / "r").exists()
    nested = tmp_path / "nested.yaml"
    nested.write_text(f"train_manifest: {synthetic / 'train.csv'}\noptim: {{lr_peak: 0.5}}\n")
    _one_line_error(_run(["stage1", "--config", str(nested), "--out", str(tmp_path / "r")]), "optim.lr_peak")
    _one_line_error(_run(["stage1", "--out", str(tmp_path / "r")]),
                    "missing required setting(s) train_manifest (--train-manifest)")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    _one_line_error(_run(["extract", "--config", str(broken)]), "is not valid JSON")
    for command in ("extract", "evaluate", "train-temporal", "demo"):
        typo = tmp_path / f"{command}.yaml"
        typo.write_text("no_such_setting: 1\n")
        _one_line_error(_run([command, "--config", str(typo)]), "unknown key(s) no_such_setting")


def test_extract_and_evaluate_from_yaml_equal_their_flags(tiny_run: Path, synthetic: Path, tmp_path: Path) -> None:
    flags = ["--model", str(tiny_run), "--manifest", str(synthetic / "val.csv"), "--cache-root",
             str(tmp_path / "caches"), "--frames", "4", "--mode", "eval", "--num-workers", "0", "--no-progress"]
    by_flags = _run(["extract", *flags])
    assert by_flags.exit_code == 0, by_flags.output
    settings = tmp_path / "extract.yaml"
    settings.write_text(f"model: {tiny_run}\nmanifest: {synthetic / 'val.csv'}\ncache_root: {tmp_path / 'caches'}\n"
                        "frames: 4\nmode: eval\nnum_workers: 0\n")
    by_file = _run(["extract", "--config", str(settings), "--no-progress"])
    assert by_file.exit_code == 0, by_file.output
    a, b = (_last_json(r.output) for r in (by_flags, by_file))
    assert a["cache"] == b["cache"] and b["reused"]  # the same settings: the same cache, reused
    other = _run(["extract", "--config", str(settings), "--frames", "6", "--no-progress"])  # a flag wins
    assert other.exit_code == 0, other.output
    assert _last_json(other.output)["cache"] != a["cache"]
    evaluate = tmp_path / "evaluate.json"
    evaluate.write_text(json.dumps({"run": str(tiny_run), "manifest": str(synthetic / "val.csv"), "num_workers": 0,
                                    "out": str(tmp_path / "eval")}))
    result = _run(["evaluate", "--config", str(evaluate)])
    assert result.exit_code == 0, result.output
    assert _last_json(result.output)["out"] == str(tmp_path / "eval")  # the file's output folder was used
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_settings_saved_before_the_option_groups_still_load_and_resume() -> None:
    """A run's 'train' section as sfa-cache wrote it on 2026-12-08, before the runtime and
    decoding option groups (and with `off`, the placement's former word): it resolves to the
    config of the same flags today, and a resume sees no difference in any setting."""
    from sfa_cache.pipelines.job_configs import (
        STAGE1_RUNTIME_KEYS,
        TRAIN_TEMPORAL_RUNTIME_KEYS,
        resolve_stage1_config,
        resolve_train_temporal_config,
    )
    from sfa_cache.run.claim import _identity
    from sfa_cache.settings_io import config_to_dict

    records = Path(__file__).parent / "records"
    old_s1 = json.loads((records / "stage1-train-2026-12-08.json").read_text())
    s1 = resolve_stage1_config(old_s1)
    assert s1 == resolve_stage1_config(dict(
        train_manifest="data/train.csv", val_manifest="data/val.csv", out="runs/s1", backbone="vit_tiny_patch16_224",
        image_size=32, frames=8, num_workers=2, decode_timeout=30.0, backend="pyav", device="cpu", batch_size=4,
        lr=5e-4, optimizer="adamw", patience=3, epochs=20))
    assert (s1.backend, s1.decode_timeout, s1.device, s1.num_workers) == ("pyav", 30.0, "cpu", 2)
    assert _identity(old_s1, STAGE1_RUNTIME_KEYS) == _identity(config_to_dict(s1), STAGE1_RUNTIME_KEYS)
    assert set(config_to_dict(s1)) == set(old_s1)  # the same keys: the file's format has not changed

    old_s2 = json.loads((records / "stage2-train-2026-12-08.json").read_text())
    s2 = resolve_train_temporal_config(old_s2)
    assert s2.cache_in_memory == "stream" and (s2.device, s2.num_workers) == ("cpu", 1)
    assert _identity(old_s2, TRAIN_TEMPORAL_RUNTIME_KEYS) == _identity(config_to_dict(s2), TRAIN_TEMPORAL_RUNTIME_KEYS)
    assert set(config_to_dict(s2)) == set(old_s2)
