"""`vpe` command line: report, stage, config, generate."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vpe_lib.config import PROFILES, ConfigError, config_to_dict, get_config
from vpe_lib.train.device import DeviceError


def parse_overrides(items: list[str]) -> dict:
    """`--set a.b=3 --set c=[1,2]`: values are JSON where they parse as JSON, else strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("report", help="run every notebook with papermill and render the HTML report")
    rep.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    rep.add_argument("--run-dir", default=None, help="where stage artifacts go (default runs/<profile>)")
    rep.add_argument("--out", default="reports", help="where the HTML report goes")
    rep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rep.add_argument("--only", nargs="*", help="run only these notebooks (stems)")
    rep.add_argument("--force", nargs="+", default=[], metavar="STAGE",
                     help="re-run these stages even if nothing they depend on changed (e.g. --force heads)")
    # A stage runs inside one notebook cell, and the study's heads stage alone takes over an hour
    # on 2 cores (its 3600 s limit killed a from-empty study run); the cells print progress, so the
    # limit only has to catch a kernel that hangs.
    rep.add_argument("--timeout", type=int, default=4 * 3600, help="per-cell execution timeout (s)")
    rep.add_argument("--index-only", action="store_true",
                     help="write OUT/index.html again from OUT/summary.json with this code, running no notebook")

    stg = sub.add_parser("stage", help="run one stage (data, pretrain, predict) outside the notebooks; "
                                       "data-parallel when launched by torchrun",
                         description="Run one stage into RUN_DIR/<stage>/, e.g. "
                                     "`torchrun --standalone --nproc_per_node=8 -m vpe_lib.cli stage pretrain "
                                     "--profile gpu --run-dir runs/gpu`; a later `vpe report` with the same "
                                     "profile, run dir and --set values finds it trained.")
    stg.add_argument("stage", choices=("data", "pretrain", "predict"))
    stg.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    stg.add_argument("--run-dir", default=None, help="where stage artifacts go (default runs/<profile>)")
    stg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    stg.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    cfg = sub.add_parser("config", help="print the resolved config of a profile")
    cfg.add_argument("--profile", default="cpu")
    cfg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    gen = sub.add_parser("generate", help="generate a PushWorld dataset")
    gen.add_argument("out", type=Path)
    gen.add_argument("--profile", default="cpu")
    gen.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        if args.command == "config":
            print(json.dumps(config_to_dict(get_config(args.profile, overrides)), indent=2))
        elif args.command == "generate":
            from vpe_lib.data.store import build_dataset

            d = get_config(args.profile, overrides).data
            r = build_dataset(args.out, d.world, n_train=d.n_train_videos, n_test=d.n_test_videos,
                              videos_per_shard=d.videos_per_shard, seed=d.seed, workers=d.workers)
            print(f"{r.n_videos} videos ({r.generated_shards} shards generated, {r.reused_shards} reused) "
                  f"in {r.wall_time_s:.1f} s -> {r.root}")
        elif args.command == "stage":
            from vpe_lib.stages.common import MissingArtifactError
            from vpe_lib.stages.runner import run_stage

            run_dir = Path(args.run_dir or f"runs/{args.profile}").resolve()  # as `vpe report` takes it
            try:
                metrics = run_stage(args.stage, args.profile, run_dir, overrides, progress=args.progress)
            except MissingArtifactError as err:  # an earlier stage not run: say which, no traceback
                print(f"vpe stage: {err}", file=sys.stderr)
                return 1
            if os.environ.get("RANK", "0") == "0":  # torchrun: one line, not one per rank
                print(f"stage {args.stage}: {len(metrics)} metrics in {run_dir / args.stage / 'metrics.json'}")
        elif args.command == "report":
            from vpe_lib.report.build import ReportError, build_report, rewrite_index

            run_dir = args.run_dir or f"runs/{args.profile}"
            try:
                if args.index_only:
                    print(f"index written to {rewrite_index(args.out)}")
                    return 0
                summary = build_report(args.profile, run_dir, args.out, overrides=overrides,
                                       timeout=args.timeout, only=args.only, force=args.force)
            except ReportError as err:
                print(f"vpe report: {err}", file=sys.stderr)
                return 1
            print(f"report written to {Path(args.out) / 'index.html'} in {summary['wall_time_s']['total']:.0f} s")
    except (ConfigError, DeviceError) as err:
        print(f"vpe: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
