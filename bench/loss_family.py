"""Step time of every loss of the family relative to SFT, trained by dftlab on the tiny Qwen2 of
throughput.py (same weights, data and batch, fp32, CPU). The losses alternate over the
repetitions, each run in a fresh process; a loss's ratio is taken per repetition against that
repetition's SFT run, and given as min / median / max.

    python bench/loss_family.py                       # 5 repetitions x 30 timed steps, padded
    python bench/loss_family.py --losses sft dft --reps 9
"""

from __future__ import annotations

import statistics
from pathlib import Path

import workload

from dftlab.losses import REGISTRY

LOSSES = list(REGISTRY)  # every member of the family


def main() -> None:
    p = workload.parser(__doc__, steps=30, out="loss_family.csv")
    p.add_argument("--losses", nargs="+", default=LOSSES)
    args = p.parse_args()
    losses = ["sft", *[x for x in args.losses if x != "sft"]]
    workload.prepare(Path(args.workdir))

    records = []
    for rep in range(args.reps):
        for loss in losses:
            result = workload.run_worker("dftlab", args, "--loss", loss)
            records.append({"rep": rep, "loss": loss, **workload.summarise(result)})
            print(f"rep {rep} {loss}: {records[-1]['s_per_step']:.4f} s/step", flush=True)

    out = workload.write_csv(args.out, records)

    by = {(r["loss"], r["rep"]): r for r in records}
    rows = []
    for loss in losses:
        times = [by[(loss, k)]["s_per_step"] for k in range(args.reps)]
        ratios = [by[(loss, k)]["s_per_step"] / by[("sft", k)]["s_per_step"] for k in range(args.reps)]
        rss = statistics.median(by[(loss, k)]["peak_rss_mib"] for k in range(args.reps))
        rows.append([loss, f"{statistics.median(times):.4f}", workload.spread(ratios), f"{rss:.0f}"])
    print(f"\n{args.reps} repetitions x {args.steps} timed steps")
    workload.print_table(["loss", "s/step (median)", "vs SFT min / median / max", "peak RSS MiB"], rows)
    print(f"\nper-run figures in {out}")


if __name__ == "__main__":
    main()
