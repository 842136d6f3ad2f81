"""The shared workload of the step-time benchmarks: a model whose initial weights are saved once
in a workdir, so that every system starts from the same ones, its training data, encoded by
dftlab, and the statistics. Two kinds of workload, told apart by the workdir:

- the toy (the default workdir): a tiny Qwen2 (2 layers, 128 wide, the character vocabulary of
  the 24-card game) on the game's training set;
- real text (`prepare_text`: SmolLM2-135M, the GPU check's Qwen2.5 architectures): any causal LM
  on rows of exactly `length` tokens of the repository's own Markdown text, described by the
  workdir's `workload.json`.

Each measurement runs in a fresh process (`python bench/step_worker.py ...`) that prints one JSON
line: the seconds of every timed optimizer step, the tokens and target tokens of its batch, and
the process's peak resident memory (and peak GPU memory on a GPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_OVERRIDES = ["debug=bench"]  # the toy model: configs/debug/bench.yaml


def compose(overrides: list[str]):
    """dftlab's config for the benchmark: no logger, no callbacks, no validation, no evaluation."""
    os.environ.setdefault("DFTLAB_ROOT", str(ROOT))
    from omegaconf import open_dict

    from dftlab.config import compose_config

    cfg = compose_config(["trainer.enable_progress_bar=false", "+trainer.limit_val_batches=0", "eval.enabled=false",
                          *overrides])
    with open_dict(cfg):
        cfg.callbacks, cfg.logger = {}, {}
    return cfg


def text_rows(tokenizer, length: int, n_rows: int, prompt_tokens: int = 16) -> list[dict]:
    """`n_rows` prompt/response rows of the repository's Markdown text (README, BENCHMARKS, docs/,
    sweeps/), consecutive windows of the text (taken again from its start when it runs out), each
    of which dftlab encodes (no chat template, cut at `length`) to exactly `length` tokens."""
    from dftlab.data.encode import encode

    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "sweeps").rglob("*.md"))]
    ids = tokenizer("\n\n".join(f.read_text() for f in files if f.is_file()), add_special_tokens=False)["input_ids"]
    window = length + length // 4  # cut to `length` by dftlab: the margin absorbs re-tokenisation
    ids = ids * (1 + n_rows * window // len(ids))
    rows = []
    for i in range(n_rows):
        w = ids[i * window : (i + 1) * window]
        row = {"prompt": tokenizer.decode(w[:prompt_tokens]), "response": tokenizer.decode(w[prompt_tokens:])}
        enc = encode(tokenizer, row["prompt"], row["response"], length, chat_template=False)
        if enc is None or len(enc.input_ids) != length:
            got = 0 if enc is None else len(enc.input_ids)
            raise RuntimeError(f"text row {i} encodes to {got} tokens, not {length}")
        rows.append(row)
    return rows


VAL_ROWS = 8  # held out by the data module; the benchmarks run no validation


def prepare_text(workdir: Path, lm, tokenizer, batch: int, length: int, lr: float, train_rows: int = 64) -> Path:
    """A real-text workload in `workdir`: the model and tokenizer (model/), `train_rows` rows of
    text (text.jsonl) and workload.json (batch, length, learning rate); kept when already there."""
    spec = workdir / "workload.json"
    if spec.is_file():
        return workdir
    lm.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")
    with open(workdir / "text.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in text_rows(tokenizer, length, train_rows + VAL_ROWS))
    spec.write_text(json.dumps({"batch": batch, "length": length, "lr": lr}))
    return workdir


def spec(workdir: str | Path) -> dict | None:
    """The real-text workload of `workdir` (None: the toy)."""
    path = Path(workdir) / "workload.json"
    return json.loads(path.read_text()) if path.is_file() else None


def overrides(workdir: str | Path) -> list[str]:
    """dftlab's model and data overrides for the workload of `workdir`."""
    workdir = Path(workdir)
    model = [f"model.name_or_path={workdir / 'model'}"]
    s = spec(workdir)
    if s is None:
        return [*MODEL_OVERRIDES, *model]
    return ["model=hf", *model, "model.dtype=float32", "data=jsonl", f"data.task.path={workdir / 'text.jsonl'}",
            "data.task.chat_template=false", f"data.task.val_size={VAL_ROWS}", f"data.batch_size={s['batch']}",
            f"data.max_length={s['length']}", "data.truncation=keep"]


def learning_rate(workdir: str | Path) -> float:
    s = spec(workdir)
    return 1e-3 if s is None else s["lr"]


def parser(doc: str, steps: int, out: str | None) -> argparse.ArgumentParser:
    """The options every step benchmark shares: steps, warm-up, workdir; repetitions and the CSV
    path when the benchmark repeats (`out`: the CSV's name under logs/bench)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workdir", default=str(ROOT / "logs" / "bench"))
    if out is not None:
        p.add_argument("--reps", type=int, default=5)
        p.add_argument("--out", default=str(ROOT / "logs" / "bench" / out))
    return p


def prepare(workdir: Path) -> Path:
    """The model directory (initial weights and tokenizer), saved once per workdir."""
    model_dir = workdir / "model"
    if (model_dir / "config.json").is_file():
        return model_dir
    import torch

    from dftlab.models import load_causal_lm, load_tokenizer

    cfg = compose([*MODEL_OVERRIDES, f"paths.output_dir={workdir / 'prepare'}"])
    torch.manual_seed(0)
    tokenizer = load_tokenizer(cfg.model)
    lm = load_causal_lm(cfg.model, tokenizer)
    lm.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def peak_rss() -> int:
    """Peak resident memory of this process, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(system: str, args: argparse.Namespace, *extra: str, timeout: float | None = None) -> dict:
    """One measurement of `system` in a fresh process, with the shared options of `args`; its JSON
    result."""
    cmd = [system, "--workdir", str(args.workdir), "--steps", str(args.steps), "--warmup", str(args.warmup), *extra]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "step_worker.py"), *cmd],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"step_worker {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    return path


def summarise(result: dict) -> dict:
    """Per-step and per-token figures of one measurement."""
    seconds = sum(result["step_seconds"])
    gpu = {"peak_gpu_mib": result["peak_gpu"] / 2**20} if "peak_gpu" in result else {}
    return {
        "s_per_step": statistics.median(result["step_seconds"]),
        "tokens_per_s": sum(result["tokens"]) / seconds,
        "targets_per_s": sum(result["targets"]) / seconds,
        "padded_per_step": statistics.mean(result["positions"]) - statistics.mean(result["tokens"]),
        "peak_rss_mib": result["peak_rss"] / 2**20,
        **gpu,
    }


# operator name fragments -> what they are, for the profile's shares of self CPU time
CATEGORIES = [
    # a record_function's own time (`Optimizer.step#AdamW.step`, which under Lightning encloses the
    # forward and backward closure, the data loader's `__next__`): Python and framework code
    ("python / framework", ("#",)),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "attention")),
    ("grad norm", ("_foreach_norm", "linalg_vector_norm")),  # the total gradient norm (logging, guard, clipping)
    ("softmax / loss", ("softmax", "log_softmax", "gather", "nll_loss", "cross_entropy", "scatter")),
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("copies / layout", ("copy_", "contiguous", "cat", "index", "masked", "clone", "to_copy", "empty", "zero_",
                         "fill_")),
]


def op_shares(averages) -> dict:
    """Share of self CPU time per category (and the top operators), from profiler key averages."""
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    shares = {name: 0.0 for name, _ in CATEGORIES} | {"other": 0.0}
    for e in averages:
        name = e.key.lower()
        cat = next((c for c, frags in CATEGORIES if any(f in name for f in frags)), "other")
        shares[cat] += e.self_cpu_time_total / total
    top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:8]
    return {"shares": shares, "top": [[e.key, e.self_cpu_time_total / total] for e in top]}


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def print_table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def print_markdown(header: list[str], rows: list[list]) -> None:
    """A table to paste into BENCHMARKS.md."""
    for row in [header, ["---"] * len(header), *rows]:
        print("| " + " | ".join(str(x) for x in row) + " |")
