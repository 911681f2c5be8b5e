"""Run the spatial model over frames gathered across clips, in batches of a fixed size.

Clips are `[n, 3, S, S]` frame stacks of any length; the model always sees `batch_frames`
frames per call (the last call of a `flush` may be smaller), so a GPU runs one shape at full
occupancy whatever the clip lengths, views or failures. A clip may straddle two batches.

On a GPU the three steps of a batch overlap with the next batch's: frames are gathered into one
of two pinned uint8 staging buffers and copied without blocking, the forward is queued, and the
tokens come back to pinned host memory without blocking; a batch's tokens reach the sink when
the next batch has been queued (or at `flush`). On the CPU every step is synchronous.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Optional

import torch

Encode = Callable[[torch.Tensor], torch.Tensor]  # [N, 3, S, S] (host) -> [N, D] (on the model's device)
Sink = Callable[[Hashable, int, torch.Tensor], None]  # (key, first frame, tokens [n, D] float32 on the CPU)
Segment = tuple[Hashable, int, int]  # (key, first frame, frames) of one clip's part of a batch


class FrameBatcher:
    """`add(key, frames)` queues a clip; tokens reach `sink(key, start, tokens)` as batches run.

    `device`: where `encode` computes (default: the CPU); CUDA turns on the overlap of the module doc.
    """

    def __init__(self, encode: Encode, batch_frames: int, sink: Sink, device: Optional[torch.device] = None) -> None:
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
        self.encode = encode
        self.batch_frames = batch_frames
        self.sink = sink
        self.overlap = device is not None and device.type == "cuda"
        self._staging: list[Optional[torch.Tensor]] = [None, None]  # pinned, used in turn
        self._turn = 0
        self._inflight: Optional[tuple[torch.Tensor, Optional[torch.cuda.Event], list[Segment]]] = None
        self._pending: list[tuple[Hashable, int, torch.Tensor]] = []  # (key, start, frames)
        self._queued = 0
        self.frames_done = 0
        self.encode_seconds = 0.0  # time in `encode` and waiting for its results: the model's busy time

    def add(self, key: Hashable, frames: torch.Tensor) -> None:
        self._pending.append((key, 0, frames))
        self._queued += frames.shape[0]
        while self._queued >= self.batch_frames:
            self._run(self.batch_frames)

    def flush(self) -> None:
        while self._queued:
            self._run(min(self._queued, self.batch_frames))
        self._deliver()

    def _stage(self, parts: list[torch.Tensor], n: int) -> torch.Tensor:
        """The batch's frames as one tensor; in a pinned buffer (reused in turn) on a GPU. A buffer
        is reused two batches later, after the batch that used it was delivered (so copied)."""
        if not self.overlap:
            return torch.cat(parts) if len(parts) > 1 else parts[0]
        shape = (self.batch_frames, *parts[0].shape[1:])
        buf = self._staging[self._turn]
        if buf is None or buf.shape != shape or buf.dtype != parts[0].dtype:
            buf = self._staging[self._turn] = torch.empty(shape, dtype=parts[0].dtype, pin_memory=True)
        self._turn ^= 1
        return torch.cat(parts, out=buf[:n])

    def _deliver(self) -> None:
        """Hand the batch in flight to the sink, once its tokens are on the host."""
        if self._inflight is None:
            return
        tokens, done, segments = self._inflight
        self._inflight = None
        t0 = time.perf_counter()
        if done is not None:
            done.synchronize()
        self.encode_seconds += time.perf_counter() - t0
        offset = 0
        for key, start, k in segments:
            self.sink(key, start, tokens[offset : offset + k])
            offset += k

    def _run(self, n: int) -> None:
        parts, segments, taken = [], [], 0
        while taken < n:
            key, start, frames = self._pending[0]
            k = min(frames.shape[0], n - taken)
            parts.append(frames[:k])
            segments.append((key, start, k))
            if k == frames.shape[0]:
                self._pending.pop(0)
            else:
                self._pending[0] = (key, start + k, frames[k:])
            taken += k
        frames = self._stage(parts, n)
        t0 = time.perf_counter()
        tokens = self.encode(frames)
        done = None
        if self.overlap:  # back to pinned host memory without blocking; waited for in `_deliver`
            host = torch.empty(tokens.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(tokens, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            tokens = host
        self.encode_seconds += time.perf_counter() - t0
        self._queued -= n
        self.frames_done += n
        self._deliver()  # the previous batch: its work was queued before this one's
        self._inflight = (tokens.float(), done, segments)
