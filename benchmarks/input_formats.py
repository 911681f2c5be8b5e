"""The same videos read as files (CSV), WebDataset shards and HDF5 frames (raw, JPEG).

Packs a synthetic dataset each way, then measures, in one process (what one data worker does):
the time to index the input (the first time, and again: shard indexes are saved), and clips/s of
Stage 1's evaluation item (`--frames` frames of each video decoded, resized and cropped) over
every clip in order. Encoded video (files and shards) is read with each of `--backends`, each as
a ratio to the first one measured in the same run; HDF5 frames need no decoder.

    python -m benchmarks.input_formats --workdir /tmp/sfa-bench
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import h5py
import numpy as np

from benchmarks.common import benchmark_dataset, machine, table
from sfa_cache.data.inputs import read_input
from sfa_cache.data.manifest import infer_classes, read_manifest
from sfa_cache.data.pack_wds import pack_wds
from sfa_cache.data.video_dataset import VideoClipDataset
from sfa_cache.video.clips import ClipSpec
from sfa_cache.video.reader import open_video


def write_h5(path: Path, csv: Path, encoding: str) -> None:
    """Every video of `csv` decoded, stored raw (one frame per chunk) or as one image per frame."""
    from PIL import Image

    manifest = read_manifest(csv, infer_classes(csv))
    with h5py.File(path, "w") as f:
        f.attrs["classes"] = manifest.classes
        for e in manifest.entries:
            reader = open_video(e.path)
            frames = reader.get_frames(range(reader.num_frames))
            key = f"{e.row:08d}"
            if encoding == "raw":
                ds = f.create_dataset(key, data=frames, chunks=(1, *frames.shape[1:]))
            else:
                ds = f.create_dataset(key, (len(frames),), dtype=h5py.vlen_dtype(np.uint8))
                for i, frame in enumerate(frames):
                    buf = io.BytesIO()
                    Image.fromarray(frame).save(buf, format=encoding, quality=90)
                    ds[i] = np.frombuffer(buf.getvalue(), np.uint8)
            ds.attrs["label"] = e.label


def measure(source: str, frames: int, image_size: int, backend: str) -> tuple[float, float, float, int]:
    """(seconds to index, to index again, clips/s, clips) for the evaluation item over every clip of `source`."""
    for saved in Path(source).parent.glob(".*.sfa-index.json"):  # the shard indexes of an earlier run
        saved.unlink()
    t0 = time.perf_counter()
    read_input(source)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    manifest = read_input(source)
    again_s = time.perf_counter() - t0
    ds = VideoClipDataset(manifest, ClipSpec(frames, image_size, (0.5,) * 3, (0.5,) * 3, False, backend))
    ds[0]  # first-use costs (decoder libraries, the HDF5 handle) are not per-clip
    t0 = time.perf_counter()
    for i in range(len(ds)):
        assert ds[i] is not None
    return index_s, again_s, len(ds) / (time.perf_counter() - t0), len(ds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/sfa-bench"))
    p.add_argument("--per-class", type=int, default=20, help="clips per class (7 classes)")
    p.add_argument("--video-frames", type=int, default=64, help="frames per video")
    p.add_argument("--size", type=int, default=128, help="frame side of the videos")
    p.add_argument("--frames", type=int, default=16, help="frames per clip read")
    p.add_argument("--backends", default="decord,pyav,torchcodec", help="decoders of encoded video, comma-separated")
    args = p.parse_args()

    root = args.workdir / f"inputs-{args.per_class}x{args.video_frames}f-{args.size}px"
    csv = benchmark_dataset(root / "data", per_class=args.per_class, frames=args.video_frames, size=args.size)
    result = pack_wds(
        read_manifest(csv, infer_classes(csv)), root / "shards", 16 * 2**20, prefix="train", progress=False
    )
    videos = sum(f.stat().st_size for f in (root / "data").rglob("*.mp4"))
    shards = sum(f.stat().st_size for f in (root / "shards").glob("*.tar"))
    sources = {"CSV + video files": (str(csv), videos), "WebDataset shards": (result.pattern, shards)}
    for encoding in ("raw", "JPEG"):
        path = root / f"frames-{encoding.lower()}.h5"
        if not path.is_file():
            write_h5(path, csv, encoding)
        sources[f"HDF5, {encoding} frames"] = (str(path), path.stat().st_size)
    backends = args.backends.split(",")
    rows = []
    for name, (source, nbytes) in sources.items():
        reference = None
        for backend in backends if not name.startswith("HDF5") else ["-"]:
            decoder = backends[0] if backend == "-" else backend  # HDF5 frames: unused
            index_s, again_s, clips_s, n = measure(source, args.frames, args.size, decoder)
            reference = reference or clips_s
            rows.append([name, backend, f"{nbytes / 2**20:.1f} MiB", f"{1e3 * index_s:.0f} ms",
                         f"{1e3 * again_s:.0f} ms", f"{clips_s:.0f}",
                         "-" if backend == "-" else f"{clips_s / reference:.2f}x"])
    print(f"machine: {machine()}")
    print(f"{n} videos of {args.video_frames} frames at {args.size} px; {args.frames}-frame evaluation clips, "
          "one process\n")
    print(table(["input", "decoder", "size on disk", "index", "index again", "clips/s", f"vs {backends[0]}"], rows))


if __name__ == "__main__":
    main()
