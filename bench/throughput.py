"""Training throughput of dftlab against TRL's SFTTrainer (loss_type="dft") and a plain PyTorch
loop, on the same tiny Qwen2, the same initial weights, the same examples and global batch, in fp32
on the CPU: padded first, then padding-free (dftlab: `data.packing=true`, rows of at most
`data.max_length` tokens; TRL: `padding_free=True`, the whole batch in one row).

The systems alternate (dftlab, TRL, plain, dftlab, ...) over the repetitions, each in a fresh
process. The ratios are taken per repetition (one run of each system) and given as min / median /
max.

    pip install "trl>=1.0"                      # the optional benchmark dependency
    python bench/throughput.py                  # 5 repetitions of 30 timed steps after 5 warm-up steps
    python bench/throughput.py --reps 9 --steps 50 --modes padded
"""

from __future__ import annotations

import statistics
from pathlib import Path

import workload

SYSTEMS = ["dftlab", "trl", "plain"]


def main() -> None:
    p = workload.parser(__doc__, steps=30, out="throughput.csv")
    p.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    p.add_argument("--modes", nargs="+", default=["padded", "packed"], choices=["padded", "packed"])
    args = p.parse_args()
    workload.prepare(Path(args.workdir))

    records = []
    for mode in args.modes:
        for rep in range(args.reps):
            for system in args.systems:
                result = workload.run_worker(system, args, *(["--packing"] if mode == "packed" else []))
                records.append({"mode": mode, "rep": rep, "system": system, **workload.summarise(result)})
                r = records[-1]
                print(f"{mode} rep {rep} {system}: {r['s_per_step']:.4f} s/step, {r['tokens_per_s']:.0f} tokens/s",
                      flush=True)

    out = workload.write_csv(args.out, records)

    print(f"\n{args.reps} repetitions x {args.steps} timed steps (medians over repetitions)")
    rows = []
    for mode in args.modes:
        for system in args.systems:
            mine = [r for r in records if r["mode"] == mode and r["system"] == system]
            med = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k not in ("mode", "rep", "system")}
            rows.append([mode, system, f"{med['s_per_step']:.4f}", f"{med['tokens_per_s']:.0f}",
                         f"{med['targets_per_s']:.0f}", f"{med['padded_per_step']:.0f}", f"{med['peak_rss_mib']:.0f}"])
    workload.print_table(["mode", "system", "s/step", "tokens/s", "targets/s", "pad/step", "peak RSS MiB"], rows)

    print("\nratios per repetition, min / median / max")
    ratios = []
    pairs = [("dftlab", "trl", "tokens/s dftlab / TRL"), ("dftlab", "plain", "s/step dftlab / plain")]
    for mode in args.modes:
        by = {(r["system"], r["rep"]): r for r in records if r["mode"] == mode}
        for a, b, what in pairs:
            if a in args.systems and b in args.systems:
                key = "tokens_per_s" if "tokens" in what else "s_per_step"
                values = [by[(a, k)][key] / by[(b, k)][key] for k in range(args.reps)]
                ratios.append([mode, what, workload.spread(values)])
    if "packed" in args.modes and "padded" in args.modes:
        for system in args.systems:
            by = {(r["mode"], r["rep"]): r for r in records if r["system"] == system}
            values = [by[("packed", k)]["s_per_step"] / by[("padded", k)]["s_per_step"] for k in range(args.reps)]
            ratios.append([system, "s/step packed / padded", workload.spread(values)])
    workload.print_table(["", "ratio", "min / median / max"], ratios)
    print(f"\nper-run figures in {out}")


if __name__ == "__main__":
    main()
