"""Benchmark motion for masking: codec motion vectors vs. block matching, on one core.

    python bench/bench_motion_vectors.py [--quick] [--out bench/results/motion_vectors.json]

On the same frames in one run, per input:
  * codec: ms/frame to read the vectors of an already-encoded mp4 (decode with
    export_mvs + painting the per-pixel field + median subtraction);
  * decode only: ms/frame to decode the same mp4 without exporting vectors,
    so that the extraction overhead over plain decoding is visible;
  * block matching: ms/frame of the exhaustive SAD fallback (block 8, search 4)
    on the decoded frames;
  * encode: ms/frame to make the mp4 from raw frames (H.264, bf=0, refs=1),
    the cost a raw-frame dataset such as PushWorld pays once.
Inputs: PushWorld 64x64 clips, a 256x256 moving-square clip, and the first
frames of /work/shared/data/clips/bear.mp4 if present (1080p with B-frames).
The host may be shared and noisy: each timing is the best of --repeats runs.
"""

from __future__ import annotations

import os

# One core, set before numpy is imported (BLAS threads would otherwise spin up).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.data.motion import block_matching_motion, codec_motion_from_file  # noqa: E402
from vpe_lib.data.synthetic_motion import moving_square_clip  # noqa: E402
from vpe_lib.data.pushworld import PushWorldConfig, generate_video  # noqa: E402
from vpe_lib.data.video import export_mp4, read_video  # noqa: E402

BEAR = Path("/work/shared/data/clips/bear.mp4")
BLOCK, SEARCH = 8, 4


def best_ms(fn, n_frames: int, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs, in ms per frame."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / n_frames


def decode_only(path: Path, max_frames: int) -> None:
    import av

    with av.open(str(path)) as container:
        for i, _frame in enumerate(container.decode(video=0)):
            if i + 1 >= max_frames:
                break


def measure(name: str, path: Path, frames: np.ndarray, repeats: int, encode=None) -> dict:
    """Time every stage on ``frames`` (the decoded content of ``path``)."""
    n = len(frames)
    row = {"height": int(frames.shape[1]), "width": int(frames.shape[2]), "frames": n}
    row["encode_ms_per_frame"] = None if encode is None else round(best_ms(encode, n, repeats), 3)
    codec_motion_from_file(path, max_frames=n)  # warm-up: imports, codec init
    row["codec_ms_per_frame"] = round(best_ms(lambda: codec_motion_from_file(path, max_frames=n),
                                              n, repeats), 3)
    row["decode_only_ms_per_frame"] = round(best_ms(lambda: decode_only(path, n), n, repeats), 3)
    row["block_matching_ms_per_frame"] = round(best_ms(
        lambda: block_matching_motion(frames, block=BLOCK, search=SEARCH), n, repeats), 3)
    row["ratio_block_matching_over_codec"] = round(
        row["block_matching_ms_per_frame"] / row["codec_ms_per_frame"], 2)
    _, valid = codec_motion_from_file(path, max_frames=n)
    has = valid.reshape(n, -1).any(1)
    # pixels without a vector inside frames that have vectors: intra blocks
    row["intra_fraction"] = round(float(1 - valid[has].mean()), 5) if has.any() else None
    row["frames_without_vectors"] = int((~has).sum())
    print(f"{name:>18} {row['height']}x{row['width']}x{n}: codec {row['codec_ms_per_frame']:.2f} "
          f"ms/frame (decode only {row['decode_only_ms_per_frame']:.2f}), block matching "
          f"{row['block_matching_ms_per_frame']:.2f} ms/frame -> "
          f"{row['ratio_block_matching_over_codec']:.1f}x; encode "
          + ("n/a" if encode is None else f"{row['encode_ms_per_frame']:.2f} ms/frame"))
    return row


def raw_input(name: str, frames: np.ndarray, tmp: Path, repeats: int) -> dict:
    path = export_mp4(frames, tmp / f"{name}.mp4")
    decoded = read_video(path)[:, :frames.shape[1], :frames.shape[2]]
    return measure(name, path, decoded, repeats,
                   encode=lambda: export_mp4(frames, tmp / f"{name}-enc.mp4"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny inputs, one repeat (for tests)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per stage (best is kept)")
    ap.add_argument("--bear-frames", type=int, default=12, help="frames of bear.mp4 to use")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "motion_vectors.json")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats

    inputs = {}
    with tempfile.TemporaryDirectory(prefix="bench-mv-") as tmp:
        tmp = Path(tmp)
        n_clips, n_frames = (1, 6) if args.quick else (4, 30)
        pw = np.concatenate([generate_video(s, PushWorldConfig(n_frames=n_frames))["frames"]
                             for s in range(n_clips)])
        inputs["pushworld_64"] = raw_input("pushworld_64", pw, tmp, repeats)
        side, t_sq = (64, 6) if args.quick else (256, 30)
        sq = moving_square_clip(t_sq, side, side, size=side // 4, velocity=(3, 2), seed=0)
        inputs[f"moving_square_{side}"] = raw_input(f"moving_square_{side}", sq["frames"], tmp,
                                                    repeats)
        if BEAR.is_file() and not args.quick:
            frames = read_video(BEAR, max_frames=args.bear_frames)
            inputs["bear"] = measure("bear", BEAR, frames, repeats)
        elif not args.quick:
            print(f"skipping bear: {BEAR} not found")

    result = {
        "inputs": inputs,
        "block": BLOCK,
        "search": SEARCH,
        "repeats": repeats,
        "quick": args.quick,
        "threads": 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "av": __import__("av").__version__,
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
