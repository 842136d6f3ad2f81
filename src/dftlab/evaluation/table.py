"""The printed accuracy table: splits as rows, models as columns, 95% Wilson intervals."""

from __future__ import annotations

from dftlab.errors import printable
from dftlab.evaluation.settings import Sampling


def describe(s: Sampling) -> str:
    return f"Average@{s.n} (%), temperature {s.temperature:g}, top_p {s.top_p:g}"


def _cell(r: dict | None) -> str:
    if not r:
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * r['acc']:5.1f} [{100 * lo:4.1f}, {100 * hi:4.1f}]"


def format_table(columns: dict[str, dict[str, dict]], title: str) -> str:
    """Accuracy per split (rows) and model (columns) with 95% Wilson intervals; `delta` is the
    last column minus the first when there are two; pass@k beside each when sampled."""
    columns = {name: col for name, col in columns.items() if col}
    splits = list(dict.fromkeys(s for col in columns.values() for s in col))
    with_pass = any("pass" in r for col in columns.values() for r in col.values())
    head = f"{'split':28s} {'n':>5s}" + "".join(f"  {name[:20]:>20s}" for name in columns)
    if len(columns) == 2:
        head += f"  {'delta':>6s}"
    if with_pass:
        head += "".join(f"  {'pass@k ' + name[:9]:>16s}" for name in columns)
    lines = [title + ", 95% Wilson interval" + (" over all samples" if with_pass else ""), head, "-" * len(head)]
    for split in splits:
        cells = [col.get(split) for col in columns.values()]
        n = next(c["n"] for c in cells if c)
        line = f"{split:28s} {n:5d}" + "".join(f"  {_cell(c):>20s}" for c in cells)
        if len(columns) == 2:
            line += f"  {100 * (cells[1]['acc'] - cells[0]['acc']):+6.1f}" if all(cells) else f"  {'':>6s}"
        if with_pass:
            line += "".join(f"  {100 * c['pass']:16.1f}" if c and "pass" in c else f"  {'-':>16s}" for c in cells)
        lines.append(line)
    return printable("\n".join(lines), keep_newlines=True)  # names may come from files and the command line
