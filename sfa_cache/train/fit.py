"""The epoch loop shared by Stage 1 and Stage 2: train, evaluate, log, checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from sfa_cache.data.batches import EpochSampler
from sfa_cache.distributed import barrier, dist_info
from sfa_cache.errors import SfaError
from sfa_cache.models.vivit import ViViTFE
from sfa_cache.run import progress as rp
from sfa_cache.run.copies import EMA_DIR, EMA_FILE, save_best, save_run_copy
from sfa_cache.run.record import RunRecord, write_record
from sfa_cache.run.weights import save_model_weights
from sfa_cache.runtime import keep_freed_host_memory, library_versions, peak_memory_mb
from sfa_cache.train.loop import Trainer, evaluate
from sfa_cache.train.tracking import Tracking, resolve_trackers

log = logging.getLogger("sfa_cache")

def begin_run(trainer: Trainer, out: str | Path, *, resuming: bool, record: RunRecord, classes: list[str],
              allow_world_size_change: bool = False) -> None:
    """Continue the run in `out` from its train_state.pt, or start it: config.json (`record` with
    the classes, process count and library versions filled in), classes.json and an empty
    metrics.jsonl (records logged after the last saved state are dropped on resume).

    Under torchrun every rank loads the state; only rank 0 writes. A run resumed with another
    number of processes would change the global batch and the data order, so it is refused
    unless `allow_world_size_change`.
    """
    out = Path(out)
    info = dist_info()
    barrier()  # every rank has checked the folder (run.claim.claim_run_dir) before rank 0 writes into it
    if resuming and (state := rp.load_train_state(out)) is not None:
        saved = int(state.get("world_size", 1))
        if saved != info.world_size and not allow_world_size_change:
            raise SfaError(f"{out} was trained with {saved} process(es), this resume has {info.world_size}: the global "
                           "batch and the data order would change; pass --allow-world-size-change to resume anyway")
        trainer.load_state_dict(state)
        if info.is_main:
            rp.truncate_metrics(out, trainer.step)
            log.info("resuming %s at epoch %d/%d (step %d)", out, trainer.epoch, trainer.cfg.epochs, trainer.step)
        barrier()
        return
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        rp.reset_metrics(out)
        write_record(out, dataclasses.replace(record, classes=classes, world_size=info.world_size,
                                              versions=library_versions()))
    barrier()


def start_tracking(trainer: Trainer, out: str | Path, spec: str, config: dict[str, Any], *,
                   resuming: bool) -> Optional[Tracking]:
    """The run's trackers (`--log spec`) on rank 0, after `begin_run` (a resumed run purges
    TensorBoard events past its saved step); None elsewhere or for 'none'."""
    names = resolve_trackers(spec)
    if not names or not dist_info().is_main:
        return None
    return Tracking(out, names, config=config, resume_step=trainer.step if resuming else None)


def fit_tracked(trainer: Trainer, out: str | Path, *, log: str, config: dict[str, Any], resuming: bool,
                **fit_args: Any) -> dict[str, Any]:
    """`fit` with the run's trackers (`--log`) open around it: closed with the final metrics as
    hyperparameters, or with none after a crash."""
    tracking = start_tracking(trainer, out, log, config, resuming=resuming)
    last: dict[str, Any] = {}
    try:
        last = fit(trainer, out, tracking=tracking, **fit_args)
    finally:
        if tracking is not None:
            tracking.close(final=last)
    return last


def patience_exhausted(val_top1: list[float], patience: Optional[int],
                       val_loss: Optional[list[float]] = None) -> bool:
    """Early stopping: the last `patience` epochs brought no validation top-1 above the best before
    them and, when `val_loss` is given, no validation loss below the lowest before them.

    Why the loss too: on a few hundred validation clips top-1 moves in steps of whole clips and
    can sit on a plateau for many epochs while the loss is still falling; a run stopped there is
    stopped mid-descent, not converged (measured in docs/demo.md: SFA stopped at epoch 14 on such
    a plateau, 24 points below where 3 other training seeds ended).
    """
    if not patience or len(val_top1) <= patience:
        return False
    top1_stalled = max(val_top1[-patience:]) <= max(val_top1[:-patience])
    if val_loss is None or len(val_loss) != len(val_top1):
        return top1_stalled
    return top1_stalled and min(val_loss[-patience:]) >= min(val_loss[:-patience])


def fit(
    trainer: Trainer,
    out: str | Path,
    *,
    train_loader: Iterable,
    train_sampler: EpochSampler,
    val_loader: Optional[Iterable] = None,
    log_every: int = 0,
    stop_after: Optional[int] = None,
    tracking: Optional[Tracking] = None,
) -> dict[str, Any]:
    """Run the remaining epochs of `trainer` (at most `stop_after` in this call), or fewer when
    neither validation top-1 nor validation loss has improved for `trainer.cfg.patience` epochs
    (early stopping, `patience_exhausted`).

    Each epoch appends one record to metrics.jsonl, then writes model.safetensors and, last,
    train_state.pt: a crash leaves the previous epoch's complete state to resume from. Whether
    patience ran out is read back from metrics.jsonl, so a resumed run stops where it would have.
    Returns the last epoch's record of this call (if any) with `complete` (no epoch is left to
    train) and `stopped_early` (patience ran out before the last epoch).
    """
    out = Path(out)
    if trainer.device.type == "cpu":  # batches of MiBs allocated and freed every step: keep the pages
        keep_freed_host_memory()
    main = dist_info().is_main
    epochs, patience = trainer.cfg.epochs, trainer.cfg.patience
    if patience and val_loader is None:
        raise SfaError("--patience stops on validation top-1: give validation data")
    validated = [r for r in rp.read_metrics(out) if r.get("kind") == "epoch" and "val_top1" in r]
    val_top1 = [r["val_top1"] for r in validated]
    val_loss = [r["val_loss"] for r in validated]
    last: dict[str, Any] = {}
    ran = 0
    while (
        trainer.epoch < epochs
        and not patience_exhausted(val_top1, patience, val_loss)
        and (stop_after is None or ran < stop_after)
    ):
        epoch = trainer.epoch
        train_sampler.set_epoch(epoch)
        record = _train_and_validate(trainer, out, train_loader, val_loader, log_every=log_every if main else 0,
                                     tracking=tracking)
        if main:  # every rank holds the same weights and the reduced metrics; one writes them
            _save_epoch(trainer, out, record, new_best=val_loader is not None
                        and record["val_top1"] > max(val_top1, default=-math.inf), tracking=tracking)
        barrier()
        if main:
            log.info("epoch %d/%d  loss %.4f  %s%s  (%.1fs)", epoch + 1, epochs, record["train_loss"],
                     f"val top-1 {record['val_top1']:.2f}  top-5 {record['val_top5']:.2f}" if val_loader else "no val",
                     f"  EMA top-1 {record['ema_val_top1']:.2f}" if "ema_val_top1" in record else "",
                     record["epoch_seconds"])
        last = record
        ran += 1
        if val_loader is not None:
            val_top1.append(record["val_top1"])
            val_loss.append(record["val_loss"])
    stopped_early = trainer.epoch < epochs and patience_exhausted(val_top1, patience, val_loss)
    if stopped_early and main and ran:
        log.info("stopped at epoch %d of %d: neither validation top-1 nor loss has improved for %d epochs "
                 "(best top-1 %.2f)", trainer.epoch, epochs, patience, max(val_top1))
    return {**last, "complete": trainer.epoch >= epochs or stopped_early, "stopped_early": stopped_early}


def _train_and_validate(trainer: Trainer, out: Path, train_loader: Iterable, val_loader: Optional[Iterable], *,
                        log_every: int, tracking: Optional[Tracking]) -> dict[str, Any]:
    """One epoch of training, then validation (and the EMA weights' too): the epoch's record."""
    epoch, t0 = trainer.epoch, time.perf_counter()
    record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1}
    record.update(trainer.train_epoch(train_loader, log_every=log_every, log=lambda r: _log(out, r, tracking),
                                      desc=f"epoch {epoch + 1}/{trainer.cfg.epochs}"))
    _check_learnt_from_something(record, "train", epoch)
    if val_loader is not None:
        record.update(evaluate(trainer.module, val_loader, device=trainer.device, num_classes=trainer.num_classes,
                               amp=trainer.cfg.amp))
        _check_learnt_from_something(record, "val", epoch)
        if trainer.ema is not None:
            ema_metrics = evaluate(trainer.ema.module, val_loader, device=trainer.device,
                                   num_classes=trainer.num_classes, amp=trainer.cfg.amp, desc="eval (EMA)")
            record.update({f"ema_{k}": v for k, v in ema_metrics.items()})
    record.update(step=trainer.step, lr=trainer.lr(), epoch_seconds=time.perf_counter() - t0,
                  peak_mem_mb=round(peak_memory_mb(trainer.device), 1))
    return record


def _save_epoch(trainer: Trainer, out: Path, record: dict[str, Any], *, new_best: bool,
                tracking: Optional[Tracking]) -> None:
    """The epoch on disk, in the order a crash can interrupt anywhere (rank 0 only): its metrics,
    the weights, OUT/best and OUT/ema, and last train_state.pt, which marks the epoch as done."""
    model: ViViTFE = trainer.module
    rp.append_metrics(out, record)
    save_model_weights(model, out)
    if new_best:
        save_best(model, out, record)  # before the state: a resumed run has its best already
    if trainer.ema is not None:
        save_run_copy(trainer.ema.module, out, EMA_DIR, EMA_FILE, {"decay": trainer.cfg.ema, **{
            k: record[k] for k in ("epoch", "step", "ema_val_top1", "ema_val_top5") if k in record}})
    rp.save_train_state(out, trainer.state_dict())  # last: marks the epoch as done
    if tracking is not None:  # after the state: what the trackers show is resumable
        tracking.record(record)


def _check_learnt_from_something(record: dict[str, Any], split: str, epoch: int) -> None:
    """An epoch whose every clip failed to load is an error, before anything of it is saved: a
    run that learnt (or was validated) on nothing is never written as a finished epoch. The run
    is left as it was before the epoch, to `--resume` once the data are fixed."""
    if record[f"{split}_clips"] == 0:
        raise SfaError(f"epoch {epoch + 1}: none of the {record[f'{split}_dropped']} {split} clips could be loaded, "
                       "so nothing of this epoch is saved; fix the input (the failures file lists why) and --resume")


def _log(out: Path, record: dict[str, Any], tracking: Optional[Tracking]) -> None:
    """A step record: metrics.jsonl, then the trackers."""
    rp.append_metrics(out, record)
    if tracking is not None:
        tracking.record(record)
