"""Grading throughput of the code tasks: programs per second through the sandbox, the path an
evaluation takes (`CodeTask.score_many`), on the real HumanEval / HumanEval+ files.

Each problem gets `--samples` completions that mimic a model's mix: the canonical solution, the
canonical solution with its last line removed (some of these loop until their time limit), a
constant, and code that does not compile, in turn.

    python bench/code_grading.py                                  # 164 x 16 on both sets
    python bench/code_grading.py --sets humaneval --samples 4 --workers 8

Writes logs/bench/code_grading.csv. HumanEval+'s canonical outputs are computed first when they are not cached yet (in
$DFTLAB_CACHE or logs/cache; that time is reported apart). Needs DFTLAB_BENCHMARKS_DIR.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

from dftlab.evaluation.code_tasks import CodeTask
from dftlab.evaluation.sandbox import default_workers, isolation

ROOT = Path(__file__).resolve().parents[1]


def completions(p: dict, n: int) -> list[str]:
    kinds = [
        p["canonical_solution"],
        "\n".join(p["canonical_solution"].rstrip().splitlines()[:-1]) + "\n",
        "    return 0\n",
        "    return (\n",
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["humaneval", "humaneval_plus"])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-problems", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "logs" / "bench" / "code_grading.csv"))
    args = ap.parse_args()
    task = CodeTask(sets=args.sets, max_problems=args.max_problems, workers=args.workers, cache_dir=args.cache_dir)
    print(f"isolation: {isolation().describe()}; workers: {args.workers or default_workers()}")
    started = time.monotonic()
    _ = task.references
    print(f"HumanEval+ canonical outputs ready in {time.monotonic() - started:.1f} s")
    records = []
    for name in args.sets:
        rows = task.test_splits[name]
        flat_rows = [r for r in rows for _ in range(args.samples)]
        flat = [c for r in rows for c in completions(r["problem"], args.samples)]
        started = time.monotonic()
        scores = task.score_many(flat_rows, flat)
        seconds = time.monotonic() - started
        statuses = Counter(s["status"] for s in scores)
        print(
            f"{name}: {len(flat)} programs in {seconds:.1f} s = {len(flat) / seconds:.1f} programs/s; "
            f"passed {sum(s['correct'] for s in scores)}; {dict(statuses)}"
        )
        records.append(
            {
                "set": name,
                "programs": len(flat),
                "seconds": round(seconds, 2),
                "programs_per_s": round(len(flat) / seconds, 2),
                "passed": sum(s["correct"] for s in scores),
                **{f"n_{k}": v for k, v in sorted(statuses.items())},
            }
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        columns = list(dict.fromkeys(k for r in records for k in r))
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(records)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
