"""Where a training step's time goes: torch.profiler over the timed steps of each system of
throughput.py (dftlab, TRL, the plain loop), as shares of self CPU time by kind of operator, and
the top operators. One run each (a profile, not a timing: the profiler slows every op a little).

    python bench/profile_steps.py                       # padded, 20 profiled steps after 5 warm-up
    python bench/profile_steps.py --packing --systems dftlab trl
"""

from __future__ import annotations

from pathlib import Path

import workload
from throughput import SYSTEMS


def main() -> None:
    p = workload.parser(__doc__, steps=20, out=None)
    p.add_argument("--packing", action="store_true")
    p.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    args = p.parse_args()
    workload.prepare(Path(args.workdir))
    profiles = {}
    for system in args.systems:
        result = workload.run_worker(system, args, "--profile", *(["--packing"] if args.packing else []))
        profiles[system] = (workload.summarise(result), result["profile"])

    cats = list(next(iter(profiles.values()))[1]["shares"])
    rows = [[s, f"{m['s_per_step']:.4f}", *(f"{100 * p['shares'][c]:.1f}%" for c in cats)]
            for s, (m, p) in profiles.items()]
    print(f"\nshare of self CPU time over {args.steps} steps ({'packed' if args.packing else 'padded'})")
    workload.print_table(["system", "s/step (profiled)", *cats], rows)
    for system, (_, prof) in profiles.items():
        print(f"\n{system}: top operators by self CPU time")
        workload.print_table(["operator", "share"], [[k, f"{100 * v:.1f}%"] for k, v in prof["top"]])


if __name__ == "__main__":
    main()
