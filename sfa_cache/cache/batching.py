"""Run the spatial model over frames gathered across clips, in batches of a fixed size.

Clips are `[n, 3, S, S]` frame stacks of any length; the model always sees `batch_frames`
frames per call (the last call of a `flush` may be smaller), so a GPU runs one shape at full
occupancy whatever the clip lengths, views or failures. A clip may straddle two batches.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable

import torch

Encode = Callable[[torch.Tensor], torch.Tensor]  # [N, 3, S, S] -> [N, D]
Sink = Callable[[Hashable, int, torch.Tensor], None]  # (key, first frame, tokens [n, D])


class FrameBatcher:
    """`add(key, frames)` queues a clip; tokens reach `sink(key, start, tokens)` as batches run."""

    def __init__(self, encode: Encode, batch_frames: int, sink: Sink) -> None:
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
        self.encode = encode
        self.batch_frames = batch_frames
        self.sink = sink
        self._pending: list[tuple[Hashable, int, torch.Tensor]] = []  # (key, start, frames)
        self._queued = 0
        self.frames_done = 0
        self.encode_seconds = 0.0  # time inside `encode`: the model's busy time

    def add(self, key: Hashable, frames: torch.Tensor) -> None:
        self._pending.append((key, 0, frames))
        self._queued += frames.shape[0]
        while self._queued >= self.batch_frames:
            self._run(self.batch_frames)

    def flush(self) -> None:
        while self._queued:
            self._run(min(self._queued, self.batch_frames))

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
        t0 = time.perf_counter()
        tokens = self.encode(torch.cat(parts) if len(parts) > 1 else parts[0])
        self.encode_seconds += time.perf_counter() - t0
        self._queued -= n
        self.frames_done += n
        offset = 0
        for key, start, k in segments:
            self.sink(key, start, tokens[offset : offset + k])
            offset += k
