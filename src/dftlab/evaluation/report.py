"""The end-of-run evaluation: the fine-tuned export and its starting model, side by side."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from dftlab.evaluation.runner import SplitResult, evaluate

log = logging.getLogger(__name__)

HEADLINE = "test/mean_acc"


def _load(path, trust_remote_code: bool = False):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return AutoModelForCausalLM.from_pretrained(str(path), dtype="auto", trust_remote_code=trust_remote_code).to(device)


def _row(r: SplitResult) -> dict:
    return {"n": r.n, "acc": r.accuracy, "ci95": list(r.ci), "well_formed": r.well_formed}


def _evaluate(cfg, task, tokenizer, path) -> dict[str, SplitResult]:
    e = cfg.eval
    max_problems = e.max_problems
    if cfg.trainer.get("fast_dev_run"):
        max_problems = 8
    lm = _load(path, bool(cfg.model.get("trust_remote_code")))
    return evaluate(
        lm, tokenizer, task, list(e.splits) if e.splits else None,
        batch_size=e.batch_size, seed=cfg.seed, max_problems=max_problems,
    )


def _cached_base_eval(cfg, task, tokenizer, base_path) -> dict[str, dict]:
    """A base model's results, cached beside it (keyed by the evaluation and the test data)."""
    spec = json.dumps(
        [OmegaConf.to_container(cfg.eval, resolve=True), OmegaConf.to_container(cfg.data.task, resolve=True),
         bool(cfg.trainer.get("fast_dev_run"))],
        sort_keys=True,
    )
    cache = Path(base_path) / f"eval-{hashlib.sha1(spec.encode()).hexdigest()[:10]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    results = {k: _row(v) for k, v in _evaluate(cfg, task, tokenizer, base_path).items()}
    if Path(base_path).is_dir():
        cache.write_text(json.dumps(results, indent=2))
    return results


def evaluate_run(cfg, task, tokenizer, export: Path, base_path, loggers) -> dict:
    """Greedy accuracy per test split for the export (and the base), printed and logged."""
    results = _evaluate(cfg, task, tokenizer, export)
    out_dir = export.parent / "eval"
    out_dir.mkdir(exist_ok=True)
    for name, r in results.items():
        with open(out_dir / f"{name}.jsonl", "w") as f:
            for rec in r.records:
                f.write(json.dumps(rec) + "\n")
    tuned = {k: _row(v) for k, v in results.items()}
    base = _cached_base_eval(cfg, task, tokenizer, base_path) if cfg.eval.base and base_path else {}
    metrics = {f"{k}/acc": v["acc"] for k, v in tuned.items()}
    metrics.update({f"{k}/well_formed": v["well_formed"] for k, v in tuned.items()})
    metrics.update({f"base/{k}/acc": v["acc"] for k, v in base.items()})
    if tuned:  # the headline number: greedy accuracy averaged over the test splits
        metrics[HEADLINE] = sum(v["acc"] for v in tuned.values()) / len(tuned)
    for lg in loggers:
        lg.log_metrics(metrics, step=None)
    print(format_table(tuned, base, cfg.run_name))
    return {"finetuned": tuned, "base": base, HEADLINE: metrics.get(HEADLINE)}


def _cell(r: dict | None) -> str:
    if not r:
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * r['acc']:5.1f} [{100 * lo:4.1f}, {100 * hi:4.1f}]"


def format_table(tuned: dict, base: dict, name: str) -> str:
    """Greedy accuracy (%) with 95% Wilson intervals, base and fine-tuned side by side."""
    head = f"{'split':28s} {'n':>5s}  {'base':>20s}  {name:>20s}  {'delta':>6s}"
    lines = [head, "-" * len(head)]
    for split, r in tuned.items():
        b = base.get(split)
        delta = f"{100 * (r['acc'] - b['acc']):+6.1f}" if b else ""
        lines.append(f"{split:28s} {r['n']:5d}  {_cell(b):>20s}  {_cell(r):>20s}  {delta:>6s}")
    return "\n".join(lines)
