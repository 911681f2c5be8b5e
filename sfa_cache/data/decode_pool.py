"""A process pool for decoding where every job has a deadline and a worker can be killed.

Why not a DataLoader: decord can hang forever holding the GIL on some broken files (decord#373),
and a DataLoader only offers a loader-wide timeout that ends the whole run. Here each job runs
in a worker process with its own deadline; a worker past it is killed (SIGKILL), the job is
reported as failed, and a fresh worker takes its place. Workers are also recycled after
`max_jobs_per_worker` jobs, bounding decord's memory growth on long videos (decord#197).

A manager thread in the parent hands out jobs and collects results while the caller computes,
so decoding runs ahead of the model; results come back in job order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import connection
from typing import Any, Callable, Generic, Iterator, Optional, Sequence, TypeVar

import torch.multiprocessing as tmp  # registers tensor pickling through shared memory

from sfa_cache.fresh_process import die_with_parent

log = logging.getLogger(__name__)
J = TypeVar("J")
READY = "ready"
STARTUP_TIMEOUT = 300.0  # seconds for a fresh worker to import its modules


@dataclass(frozen=True)
class JobFailure:
    """A job that raised, timed out or took its worker down with it."""

    reason: str


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)  # VideoReadError carries a clean reason
    return reason if isinstance(reason, str) else f"{type(e).__name__}: {e}"


def _run(fn: Callable[[Any], Any], job: Any) -> Any:
    try:
        return fn(job)
    except Exception as e:  # one bad input is a failed job, reported with its reason
        log.debug("job failed", exc_info=True)
        return JobFailure(_reason(e))


def _worker_main(conn: connection.Connection, fn: Callable[[Any], Any]) -> None:
    # SIGKILL, not SIGTERM: a hung decord holds the GIL and never reads the closed pipe either.
    die_with_parent(os.getppid(), signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import torch

    torch.set_num_threads(1)  # parallelism comes from the number of workers
    conn.send(READY)  # start-up (imports) must not count against the first job's deadline
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg is None:
            return
        seq, job = msg
        conn.send((seq, _run(fn, job)))


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start a child without re-running the parent's main script in it.

    A forkserver (or spawn) child imports the parent's main module (by `__spec__` name for
    `python -m x`, else from its `__file__`) so that functions defined there can be unpickled;
    the pool never sends such functions, and for the `sfa-cache` console script or a
    `python -m benchmarks.x` run that import pulls in the whole CLI (timm, zarr ...): seconds
    per worker, paid again by every replacement worker. Without both the child skips it.
    """
    main = sys.modules["__main__"]
    spec, file = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    main.__spec__ = None
    if file is not None:
        del main.__file__
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn), daemon=True)
        with _main_script_hidden():
            self.proc.start()
        child.close()
        self.seq: Optional[int] = None  # job in flight
        self.started = time.monotonic()
        self.ready = False
        self.done = 0

    def send(self, seq: int, job: Any) -> None:
        self.seq, self.started = seq, time.monotonic()
        self.conn.send((seq, job))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=None if kill else 5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class DecodePool(Generic[J]):
    """`imap(jobs)` -> (position, fn(job) or JobFailure) in job order.

    `workers=0` runs jobs inline in the calling process (no timeout: for debugging).
    `max_ahead` bounds how many finished results may wait for the consumer (memory).
    `preload`: modules a job's payload needs, imported once in the forkserver with `fn`'s own.
    """

    def __init__(
        self,
        fn: Callable[[J], Any],
        *,
        workers: int,
        timeout: Optional[float] = 60.0,
        max_jobs_per_worker: int = 256,
        max_ahead: Optional[int] = None,
        context: str = "forkserver",
        preload: Sequence[str] = (),
    ) -> None:
        self.fn = fn
        self.workers = max(0, workers)
        self.timeout = timeout
        self.max_jobs_per_worker = max(1, max_jobs_per_worker)
        self.max_ahead = max_ahead or 2 * max(1, self.workers)
        self.ctx = tmp.get_context(context)
        # Workers unpickle `fn` by reference, importing its module: that module is taken from the
        # function (never named by the caller) and imported once in the forkserver instead.
        own = getattr(getattr(fn, "func", fn), "__module__", None)  # a functools.partial's: its function's
        modules = [m for m in dict.fromkeys([own, *preload]) if m and m != "__main__"]  # a script's: never
        if modules and context == "forkserver":
            self.ctx.set_forkserver_preload(modules)
        self.timeouts = 0
        self.crashes = 0

    def imap(self, jobs: Sequence[J]) -> Iterator[tuple[int, Any]]:
        """Iterate (position, result) in job order; call `close()` on it to stop early."""
        if self.workers == 0:
            return ((i, _run(self.fn, job)) for i, job in enumerate(jobs))
        return _Run(self, list(jobs))


class _Run:
    """One `imap` call: an iterator whose manager thread shares its state under `cond`."""

    def __init__(self, pool: DecodePool, jobs: list[Any]) -> None:
        self.pool = pool
        self.jobs = jobs
        self.results: dict[int, Any] = {}
        self.consumed = 0  # results handed to the consumer so far
        self.error: Optional[BaseException] = None
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.workers: list[_Worker] = []
        self.thread = threading.Thread(target=self._manage, name="decode-pool", daemon=True)

    def __iter__(self) -> "_Run":
        return self

    def __next__(self) -> tuple[int, Any]:
        i = self.consumed
        if i >= len(self.jobs):
            self.close()
            raise StopIteration
        if self.thread.ident is None:  # start on first use, like a generator
            self.thread.start()
        return i, self.take(i)

    def take(self, i: int) -> Any:
        with self.cond:
            while i not in self.results:
                if self.error is not None:
                    raise RuntimeError("the decode pool's manager thread failed") from self.error
                self.cond.wait(0.5)
            self.consumed = i + 1
            self.cond.notify_all()
            return self.results.pop(i)

    def close(self) -> None:
        self.stopping.set()
        if self.thread.ident is not None:
            self.thread.join()

    def _deliver(self, seq: int, result: Any) -> None:
        with self.cond:
            self.results[seq] = result
            self.cond.notify_all()

    def _manage(self) -> None:
        pool = self.pool
        try:
            self.workers = [_Worker(pool.ctx, pool.fn) for _ in range(min(pool.workers, len(self.jobs)))]
            next_job = 0
            while not self.stopping.is_set():
                for i, w in enumerate(self.workers):  # hand out work
                    if w.seq is not None or not w.ready:
                        continue
                    if w.done >= pool.max_jobs_per_worker:  # worn out: its successor gets work once ready
                        self._restart(i, w)
                        continue
                    with self.cond:
                        room = next_job < min(len(self.jobs), self.consumed + pool.max_ahead)
                    if not room:
                        break
                    try:
                        w.send(next_job, self.jobs[next_job])
                    except OSError:  # it died while idle (e.g. the OOM killer): the job goes elsewhere
                        w.seq = None
                        self._restart(i, w, died=True)
                        continue
                    next_job += 1
                if next_job >= len(self.jobs) and all(w.seq is None for w in self.workers):
                    return
                # Watch every worker, idle ones included: any of them may die at any time.
                waitables = [w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers]
                ready = connection.wait(waitables, timeout=0.1)
                now = time.monotonic()
                for i, w in enumerate(self.workers):
                    if w.conn in ready or w.proc.sentinel in ready:
                        self._collect(i, w)
                    elif not w.ready and now - w.started > STARTUP_TIMEOUT:
                        raise RuntimeError(f"a decode worker did not start within {STARTUP_TIMEOUT:g}s")
                    elif w.seq is not None and pool.timeout is not None and now - w.started > pool.timeout:
                        if w.conn.poll():  # the result arrived after the wait returned
                            self._collect(i, w)
                            continue
                        pool.timeouts += 1
                        self._replace(i, w, f"decode timed out after {pool.timeout:g}s (worker killed)")
        except BaseException as e:  # surfaced to the consumer by take()
            with self.cond:
                self.error = e
                self.cond.notify_all()
        finally:
            for w in self.workers:
                w.stop(kill=self.stopping.is_set())

    def _collect(self, i: int, w: _Worker) -> None:
        try:
            if w.conn.poll():
                msg = w.conn.recv()
                if msg == READY:
                    w.ready = True
                    return
                seq, result = msg
                w.seq = None
                w.done += 1
                self._deliver(seq, result)
                return
        except (EOFError, OSError):
            pass
        # The process ended (or its pipe broke) without a result.
        w.proc.join(timeout=1)
        if not w.ready:  # a worker that cannot even start is a broken setup, not a bad video
            raise RuntimeError(f"a decode worker died while starting (exit code {w.proc.exitcode})")
        if w.seq is None:
            self._restart(i, w, died=True)
            return
        self.pool.crashes += 1  # a crash inside the decoder: the job fails, the run goes on
        self._replace(i, w, f"decoder process died (exit code {w.proc.exitcode})")

    def _restart(self, i: int, w: _Worker, died: bool = False) -> None:
        """Replace an idle worker (worn out, or found dead)."""
        if died:
            log.warning("a decode worker died while idle (exit code %s); starting another", w.proc.exitcode)
        w.stop(kill=died)
        self.workers[i] = _Worker(self.pool.ctx, self.pool.fn)

    def _replace(self, i: int, w: _Worker, reason: str) -> None:
        seq = w.seq
        w.stop(kill=True)
        self.workers[i] = _Worker(self.pool.ctx, self.pool.fn)
        log.debug("job %d: %s", seq, reason)
        self._deliver(seq, JobFailure(reason))
