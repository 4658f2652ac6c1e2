"""Why do the prediction transformers lose to the code table, and which lever fixes it? Each variant
trains on a run folder's tokens (its data and pretrained tokenizer) with the profile's recipe except
the lever, and is judged on *validation* videos in bits per future token against the unigram,
copy-tokens and code-table baselines, with its learning curve against updates and wall-clock seconds.

    python bench/predictor_levers.py                      # runs/cpu, every variant below
    [--run-dir runs/cpu] [--profile cpu] [--variants masked/base,ar/prior+cond] [--steps 600]
    [--out bench/results/predictor_levers.json]

A variant is <kind>/<lever>: base (the profile's model), prior (logits as a residual over the code
table), cond (the condition code at each place as an input), prior+cond. Runs are cached by
everything that determines them (the predict stage's run folders) and the JSON is rewritten after
each variant, so a stopped benchmark resumes where it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from vpe_lib.config import get_config  # noqa: E402
from vpe_lib.report.build import provenance  # noqa: E402
from vpe_lib.stages.common import stage_device, write_json  # noqa: E402
from vpe_lib.eval.token_baselines import fit_baselines  # noqa: E402
from vpe_lib.stages.predict_stage import cached_tokens  # noqa: E402
from vpe_lib.stages.predictor_training import (  # noqa: E402
    future_bits,
    learning_curve,
    run_folder,
    train_predictor,
    transformer_config,
)
from vpe_lib.stages.pretrain_stage import load_tokenizer  # noqa: E402

LEVERS = {"base": (False, False), "prior": (True, False), "cond": (False, True), "prior+cond": (True, True)}
VARIANTS = ("masked/base", "masked/prior+cond", "ar/base", "ar/prior+cond")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/cpu")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=0, help="updates per variant (0: the profile's)")
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--out", default="bench/results/predictor_levers.json")
    args = ap.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    cfg, run_dir = get_config(args.profile), Path(args.run_dir)
    p = cfg.predict
    tokenizer = load_tokenizer(run_dir, device=stage_device(cfg))
    tokens, key = cached_tokens(cfg, run_dir, run_dir / "predict", tokenizer)  # the stage's own token cache
    K, cf = tokenizer.cfg.codebook_size, p.cond_frames
    tr, va = tokens["train"], tokens["val"]
    _, prior, stage_metrics = fit_baselines(tokens, K, cf)  # the predict stage's own baselines and table
    baselines = {name: stage_metrics[f"predict/{name}/val_bits_per_token"]
                 for name in ("unigram", "copy_tokens", "code_table")}
    fut = va["codes"][:, cf:]
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update({"what": "validation bits per future token of each predictor variant, with its curve",
                   "profile": args.profile, "run_dir": str(run_dir), "tokens_key": key,
                   "baselines_val_bits": baselines, "exact_share_val": float((fut == va["cond"][:, :1]).mean())})
    result.setdefault("variants", {})
    print("baselines (validation bits per token):", {k: round(v, 3) for k, v in baselines.items()})
    for name in args.variants.split(","):
        kind, lever = name.split("/")
        table_prior, cond_input = LEVERS[lever]
        tcfg = dataclasses.replace(transformer_config(cfg, tokenizer, tuple(tr["codes"].shape[1:])),
                                   table_prior=table_prior, cond_input=cond_input)
        train_cfg = p.train_config(kind)
        steps = args.steps or train_cfg.steps
        train_cfg = dataclasses.replace(train_cfg, steps=steps, eval_every=args.eval_every,
                                        warmup_steps=max(train_cfg.warmup_steps, steps // 10), progress=False)
        # the predict stage's own run folders: a variant with the stage's recipe is the stage's run, reused
        folder = run_folder(run_dir / "predict" / kind, key, tcfg, train_cfg, p.masking, p.mask_ratio)
        res = train_predictor(kind, tcfg, tr, train_cfg, folder, eval_tokens=va, prior=prior, desc=name)
        curve = learning_curve(folder)
        bits = float(future_bits(res.model, va).mean())
        result["variants"][name] = {"kind": kind, "table_prior": table_prior, "cond_input": cond_input,
                                    "steps": steps, "lr": train_cfg.lr, "batch_size": train_cfg.batch_size,
                                    "val_bits_per_token": bits,
                                    "minus_code_table": bits - baselines["code_table"],
                                    "train_wall_s": res.wall_time_s, "curve": curve}
        print(f"{name}: {bits:.3f} bits/token ({bits - baselines['code_table']:+.3f} vs the table) "
              f"after {steps} updates, {res.wall_time_s:.0f} s")
        result["provenance"] = provenance(args.profile, started)
        write_json(out, result)
    return result


if __name__ == "__main__":
    main()
