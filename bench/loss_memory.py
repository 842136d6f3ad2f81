"""Peak memory and time of the loss forward+backward from hidden states: naive vs chunked.

Each case runs in a fresh process. "Extra memory" is the peak resident memory (VmHWM) minus the
resident memory once the inputs, the output projection and its gradient buffer exist, so it is
what the loss itself costs. Cases alternate (A B A B ...) over the repetitions and the table gives
the median. A naive case whose estimate exceeds the limit is skipped and printed as such.

    python bench/loss_memory.py                                  # batch 4 x seq 1024, Qwen2.5 shape
    python bench/loss_memory.py --batch 1 --seq 512 1024 2048 4096
    python bench/loss_memory.py --vocab 32000 --hidden 512 --reps 2   # small, for a quick look

Linux only (reads /proc/self/status). Writes a CSV beside the printed table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from workload import write_csv

GIB = 2**30


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def run_case(loss_name: str, path: str, tokens: int, vocab: int, hidden: int, chunk_mib: float) -> dict:
    """One forward+backward in this process; returns time and extra peak memory."""
    import torch

    from dftlab.engine import Head, chunk_rows_for, chunked_token_loss, naive_token_loss
    from dftlab.losses import TokenContext, build_loss

    torch.manual_seed(0)
    loss = build_loss(loss_name)
    h = (torch.randn(tokens, hidden) * 0.5).requires_grad_()
    w = (torch.randn(vocab, hidden) * hidden**-0.5).requires_grad_()
    w.grad = torch.zeros_like(w)
    h.grad = torch.zeros_like(h)
    targets = torch.randint(0, vocab, (tokens,))
    ref_h = torch.randn(tokens, hidden) * 0.5 if loss.needs_reference else None
    ref_w = torch.randn(vocab, hidden) * hidden**-0.5 if loss.needs_reference else None
    ctx = TokenContext(torch.zeros(tokens, dtype=torch.long), 1)
    if loss.needs_reference:
        with torch.no_grad():
            ctx.ref_logp = (ref_h @ ref_w.t()).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    baseline = _status("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if path == "naive":
        ref_logits = (ref_h @ ref_w.t()) if loss.kl_coef else None
        value, _ = naive_token_loss(h @ w.t(), targets, loss, ctx, float(tokens), ref_logits)
    else:
        rows = chunk_rows_for(vocab, chunk_mib)
        ref_head = Head(ref_w) if ref_w is not None else None
        value, _ = chunked_token_loss(h, Head(w), targets, loss, ctx, float(tokens), rows, ref_h, ref_head)
    value.backward()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "extra_bytes": _status("VmHWM") - baseline, "loss": float(value)}


def measure(loss_name: str, path: str, tokens: int, vocab: int, hidden: int, chunk_mib: float) -> dict:
    """`run_case` in a fresh process."""
    cmd = [sys.executable, __file__, "--vocab", str(vocab), "--hidden", str(hidden),
           "--case", loss_name, path, str(tokens), str(chunk_mib)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def naive_estimate(loss_name: str, tokens: int, vocab: int) -> float:
    """Bytes the naive path needs: fp32 logits, log-probabilities, their gradient and the softmax of
    backward (4 x [tokens x vocab]); twice that with a reference distribution (ASFT)."""
    per = 4 * tokens * vocab
    return per * (8 if loss_name == "asft" else 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, nargs="+", default=[1024])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--losses", nargs="+", default=["sft", "dft", "asft"])
    parser.add_argument("--chunk-mib", type=float, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--limit-gib", type=float, default=18)
    parser.add_argument("--out", default="logs/bench/loss_memory.csv")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)  # internal: loss path tokens chunk_mib
    args = parser.parse_args()
    if args.case:
        loss_name, path, tokens, chunk_mib = args.case
        print(json.dumps(run_case(loss_name, path, int(tokens), args.vocab, args.hidden, float(chunk_mib))))
        return

    cases = [(loss, seq, path) for seq in args.seq for loss in args.losses for path in ("naive", "chunked")]
    results: dict[tuple, list[dict]] = {c: [] for c in cases}
    skipped = {}
    for rep in range(args.reps):
        for loss, seq, path in cases:  # alternated: naive, chunked, naive, chunked ...
            tokens = args.batch * seq
            if path == "naive" and naive_estimate(loss, tokens, args.vocab) > args.limit_gib * GIB:
                skipped[(loss, seq, path)] = naive_estimate(loss, tokens, args.vocab) / GIB
                continue
            results[(loss, seq, path)].append(measure(loss, path, tokens, args.vocab, args.hidden, args.chunk_mib))
            print(f"rep {rep + 1}/{args.reps} {loss:5s} seq {seq:5d} {path:7s} done", file=sys.stderr)

    rows = []
    for loss, seq, path in cases:
        key = (loss, seq, path)
        if key in skipped:
            rows.append({"loss": loss, "batch": args.batch, "seq": seq, "path": path,
                         "extra_gib": f"skipped: est. {skipped[key]:.1f} GiB", "seconds": "", "reps": 0})
            continue
        runs = results[key]
        rows.append({
            "loss": loss, "batch": args.batch, "seq": seq, "path": path,
            "extra_gib": f"{statistics.median(r['extra_bytes'] for r in runs) / GIB:.3f}",
            "seconds": f"{statistics.median(r['seconds'] for r in runs):.2f}",
            "reps": len(runs),
        })
    _print_table(rows, args)
    write_csv(args.out, rows)
    print(f"\nwritten: {args.out}")


def _print_table(rows: list[dict], args) -> None:
    print(f"\nloss forward+backward, fp32, vocab {args.vocab}, hidden {args.hidden}, chunk {args.chunk_mib} MiB; "
          f"median of {args.reps} alternated repetitions, each in a fresh process\n")
    print("| loss | batch x seq | path | extra memory (GiB) | time (s) | chunked/naive memory | chunked/naive time |")
    print("|---|---|---|---|---|---|---|")
    by_key = {(r["loss"], r["seq"], r["path"]): r for r in rows}
    for r in rows:
        ratio_m = ratio_t = ""
        if r["path"] == "chunked":
            naive = by_key[(r["loss"], r["seq"], "naive")]
            if naive["seconds"]:
                ratio_m = f"{float(r['extra_gib']) / float(naive['extra_gib']):.3f}"
                ratio_t = f"{float(r['seconds']) / float(naive['seconds']):.2f}"
        print(f"| {r['loss']} | {r['batch']} x {r['seq']} | {r['path']} | {r['extra_gib']} | {r['seconds']} | "
              f"{ratio_m} | {ratio_t} |")


if __name__ == "__main__":
    main()
