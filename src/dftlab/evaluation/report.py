"""The end-of-run evaluation: the fine-tuned export and its starting model, side by side, greedily
and (optionally) with Average@k sampling."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dftlab.evaluation import vllm_backend
from dftlab.evaluation.journal import Journal
from dftlab.evaluation.runner import SplitResult, evaluate
from dftlab.evaluation.settings import EvalSettings, Sampling
from dftlab.evaluation.table import describe, format_table
from dftlab.vision.models import auto_class

HEADLINE = "test/mean_acc"
PARTIAL = "partial"  # eval/partial/: the finished generate batches of an evaluation that was stopped


@dataclass
class ModelResults:
    greedy: dict[str, SplitResult]
    sampled: dict[str, SplitResult] | None


def load_for_generation(path, settings: EvalSettings, trust_remote_code: bool = False):
    """The model at `path` for the chosen backend: a Hugging Face model (on the GPU when there is
    one) or a vLLM engine."""
    if settings.backend == "vllm":
        return vllm_backend.load(path, trust_remote_code=trust_remote_code, seed=settings.seed, **settings.vllm_args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = auto_class(path)  # a vision-language model loads with its image-text-to-text class
    return auto.from_pretrained(str(path), dtype="auto", trust_remote_code=trust_remote_code).to(device)


def evaluate_model(lm, tokenizer, task, settings: EvalSettings, journal: Journal | None = None) -> ModelResults:
    """Greedy accuracy per split and, when `settings.samples` is set, Average@k and pass@k.
    `journal`: keeps finished generate batches, so that a stopped evaluation resumes (see `generate`)."""
    common = {"batch_size": settings.batch_size, "seed": settings.seed, "max_problems": settings.max_problems,
              "journal": journal}
    greedy = evaluate(lm, tokenizer, task, settings.splits, **common)
    sampled = None
    if settings.samples:
        s = settings.samples
        sampled = evaluate(
            lm, tokenizer, task, settings.splits, n_samples=s.n, temperature=s.temperature, top_p=s.top_p, **common
        )
    return ModelResults(greedy, sampled)


def evaluate_path(path, tokenizer, task, settings: EvalSettings, trust_remote_code: bool = False,
                  journal: Journal | None = None) -> ModelResults:
    lm = load_for_generation(path, settings, trust_remote_code)
    try:
        return evaluate_model(lm, tokenizer, task, settings, journal)
    finally:
        if isinstance(lm, vllm_backend.VLLMModel):
            vllm_backend.release(lm)


def row(r: SplitResult) -> dict:
    out = {"n": r.n, "acc": r.accuracy, "ci95": list(r.ci), "well_formed": r.well_formed}
    if r.pass_at_k is not None:
        out["pass"] = r.pass_at_k
    return out


def rows(results: ModelResults) -> dict:
    return {
        "greedy": {k: row(v) for k, v in results.greedy.items()},
        "sampled": {k: row(v) for k, v in results.sampled.items()} if results.sampled is not None else None,
    }


def _evaluate_base(cfg, task, tokenizer, base_path, settings: EvalSettings,
                   journal: Journal | None = None) -> ModelResults:
    if not cfg.model.get("gguf_file"):
        return evaluate_path(base_path, tokenizer, task, settings, bool(cfg.model.get("trust_remote_code")), journal)
    # a GGUF file inside base_path: loaded (de-quantized) as training loads it, without the run's LoRA
    from dftlab.eval_run import Target, generation_model

    model = OmegaConf.merge(cfg.model, {"lora": {"r": 0}})
    with generation_model(Target("base", model, cfg.data), tokenizer, settings) as lm:
        return evaluate_model(lm, tokenizer, task, settings, journal)


def _cached_base_eval(cfg, task, tokenizer, base_path, settings: EvalSettings,
                      journal: Journal | None = None) -> dict:
    """A base model's results, cached beside it (keyed by the evaluation and the test data; not by
    the seed: every fine-tune of one base shares one measurement of it)."""
    key = [OmegaConf.to_container(cfg.eval, resolve=True), OmegaConf.to_container(cfg.data.task, resolve=True),
           bool(cfg.trainer.get("fast_dev_run")), settings.backend]
    folder = Path(base_path)
    if cfg.model.get("gguf_file"):  # often in an installed package's folder: cached with the run's other caches
        key += [str(base_path), cfg.model.gguf_file]
        folder = Path(cfg.paths.cache_dir) / "base_evals"
        folder.mkdir(parents=True, exist_ok=True)
    spec = json.dumps(key, sort_keys=True)
    cache = folder / f"eval-{hashlib.sha1(spec.encode()).hexdigest()[:10]}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    results = rows(_evaluate_base(cfg, task, tokenizer, base_path, settings, journal))
    if folder.is_dir():
        cache.write_text(json.dumps(results, indent=2))
    return results


def write_records(results: ModelResults, out_dir: Path) -> None:
    """Every problem with its completions and verdicts: `<split>.jsonl`, and `sampled/<split>.jsonl`."""
    for sub, by_split in (("", results.greedy), ("sampled", results.sampled or {})):
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        for name, r in by_split.items():
            with open(folder / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps(rec) + "\n" for rec in r.records)


def metrics(tuned: dict, base: dict, samples: Sampling | None) -> dict[str, float]:
    """What is logged: `<split>/acc`, `<split>/well_formed`, `base/<split>/acc`, the headline
    `test/mean_acc`; with sampling `<split>/avg@k`, `<split>/pass@k`, their `base/` twins and
    `test/mean_avg@k`."""
    out = {f"{k}/acc": v["acc"] for k, v in tuned["greedy"].items()}
    out.update({f"{k}/well_formed": v["well_formed"] for k, v in tuned["greedy"].items()})
    out.update({f"base/{k}/acc": v["acc"] for k, v in (base.get("greedy") or {}).items()})
    if tuned["greedy"]:  # the headline number: greedy accuracy averaged over the test splits
        out[HEADLINE] = sum(v["acc"] for v in tuned["greedy"].values()) / len(tuned["greedy"])
    if samples and tuned["sampled"]:
        name, k = samples.name, samples.n
        for prefix, by_split in (("", tuned["sampled"]), ("base/", base.get("sampled") or {})):
            for split, v in by_split.items():
                out[f"{prefix}{split}/{name}"] = v["acc"]
                if "pass" in v:
                    out[f"{prefix}{split}/pass@{k}"] = v["pass"]
        out[f"test/mean_{name}"] = sum(v["acc"] for v in tuned["sampled"].values()) / len(tuned["sampled"])
    return out


def evaluate_run(cfg, task, tokenizer, export: Path, base_path, loggers, step: int | None = None) -> dict:
    """Accuracy per test split for the export (and the base), printed, logged and returned for
    summary.json: `finetuned` and `base` hold the greedy rows, `sampled` the Average@k ones.

    Stopped by a signal (`StopRequested`), it keeps the generate batches it finished in
    `eval/partial/` (keyed by the export's training `step`), and the next call reuses them."""
    settings = EvalSettings.from_cfg(cfg.eval, cfg.seed, bool(cfg.trainer.get("fast_dev_run")))
    partial = export.parent / "eval" / PARTIAL
    journal = (lambda model: Journal(partial, model)) if step is not None else (lambda model: None)
    trust = bool(cfg.model.get("trust_remote_code"))
    results = evaluate_path(export, tokenizer, task, settings, trust, journal(f"{export}@{step}"))
    write_records(results, export.parent / "eval")
    tuned = rows(results)
    base = {}
    if cfg.eval.base and base_path:
        base = _cached_base_eval(cfg, task, tokenizer, base_path, settings, journal(f"{base_path}"))
    Journal(partial, "").clear()
    logged = metrics(tuned, base, settings.samples)
    for lg in loggers:
        lg.log_metrics(logged, step=None)
    print(format_table({"base": base.get("greedy") or {}, cfg.run_name: tuned["greedy"]}, "greedy accuracy (%)"))
    summary = {"finetuned": tuned["greedy"], "base": base.get("greedy") or {}, HEADLINE: logged.get(HEADLINE)}
    if settings.samples:
        s = settings.samples
        print()
        print(format_table({"base": base.get("sampled") or {}, cfg.run_name: tuned["sampled"]}, describe(s)))
        summary["sampled"] = {
            "k": s.n, "temperature": s.temperature, "top_p": s.top_p,
            "finetuned": tuned["sampled"], "base": base.get("sampled") or {},
        }
        summary[f"test/mean_{s.name}"] = logged[f"test/mean_{s.name}"]
    return summary
