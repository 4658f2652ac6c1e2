"""Is the study's largest label budget long enough? The UNet and the best pretrained configuration
(the tokenizer fine-tuned with the conv head, and its random-weight twin) at 100% labels, trained
for the study's schedule and for longer ones, each with its own warmup + cosine schedule.

    python bench/seg_convergence.py                       # runs/cpu, the study profile's recipe
    [--run-dir runs/cpu] [--steps 480,1920] [--methods unet,...] [--out bench/results/seg_convergence.json]

It is the heads stage's convergence check (`seg.convergence_steps`, `heads_stage.convergence_check`)
on a run folder that has only the data and the pretrained tokenizer, for a study that is not rendered
in full. Every run is a `Study.run` of the heads stage (the same data, split, augmentation, batch, learning
rate the study chose at 100% labels, validation every `seg.train.eval_every` updates, test weights
at the best validation step), so its numbers line up with the study table's rows. The run folder
needs the data and the pretrained tokenizer of the study's recipe: the cpu profile's are the same
(checked). The JSON gives each run's validation curve, best step, test foreground IoU (all and objects
only), training time (summed over resumes) and the provenance (commit, host, its fp32 speed); it is
written after every run, and finished runs are reused (a re-run re-scores them in about a minute).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.config import get_config, load_config  # noqa: E402
from vpe_lib.report.build import provenance  # noqa: E402
from vpe_lib.stages.common import write_json  # noqa: E402
from vpe_lib.stages.heads_stage import convergence_check  # noqa: E402
from vpe_lib.stages.seg_protocol import method_from_name  # noqa: E402
from vpe_lib.train.loop import recipe  # noqa: E402

# the learning rates the study chose on validation at 100% labels (reports/study, 480 updates)
LRS = {"unet": 3e-3, "tokenizer/conv/finetuned": 1e-2, "random_tokenizer/conv/finetuned": 1e-2}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/cpu")
    ap.add_argument("--steps", default="480,1920")
    ap.add_argument("--methods", default=",".join(LRS))
    ap.add_argument("--out", default="bench/results/seg_convergence.json")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    cfg = get_config("study")
    saved = run_dir / "pretrain" / "config.json"
    used = load_config(saved) if saved.exists() else None
    if used is not None and (used.data != cfg.data or used.pretrain.tokenizer != cfg.pretrain.tokenizer
                             or recipe(used.pretrain.train) != recipe(cfg.pretrain.train)):
        raise SystemExit(f"{run_dir}: its data or tokenizer recipe is not the study profile's")
    # the commit, the host and its measured fp32 speed: wall times are only comparable on one host
    result: dict = {"provenance": provenance("study", datetime.datetime.now(datetime.timezone.utc)),
                    "run_dir": str(run_dir), "label_pct": max(cfg.seg.label_pcts), "seed": cfg.seg.seeds[0], "runs": []}
    for name in args.methods.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            (row,) = convergence_check(cfg, run_dir, run_dir / "seg_convergence", [(method_from_name(name), LRS[name])],
                                       steps)
            result["runs"].append(row)
            print(f"{name} {steps} updates: val {row['val_fg_iou']:.4f} at {row['best_step']}, test "
                  f"{row['fg_iou']:.4f} ({row['curve_status']}, trained in {row['train_wall_s']:.0f} s)", flush=True)
            write_json(Path(args.out), result)
    # side by side: each schedule's test fg IoU per method, and each method minus the UNet (one seed)
    table = {str(n): {r["method"]: r["fg_iou"] for r in result["runs"] if r["steps"] == n}
             for n in dict.fromkeys(r["steps"] for r in result["runs"])}
    result["test_fg_iou"] = table
    result["minus_unet"] = {n: {m: v - t["unet"] for m, v in t.items() if m != "unet"} for n, t in table.items()
                            if "unet" in t}
    for n, t in table.items():
        print(f"{n} updates: " + ", ".join(f"{m} {v:.3f}" for m, v in t.items())
              + "".join(f"; {m} - unet {d:+.3f}" for m, d in result["minus_unet"].get(n, {}).items()))
    write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
