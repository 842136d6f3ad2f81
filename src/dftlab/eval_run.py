"""One evaluation from a composed `eval.yaml` (what `eval.py` runs): find the model and the task,
evaluate greedily (and with Average@k), write per-problem results and a summary, print the table.

The model, in this order of precedence:
- `run`: a run directory: its `export/`, and its task (from its `config.yaml`);
- `ckpt`: a Lightning checkpoint: its weights in the model its run was configured with (the
  run's `config.yaml`, two folders up, or else this config's `model`);
- `model.name_or_path`: a Hugging Face model directory or hub name, or `embedded-base` (built
  first when it is missing).

The task: `eval_task` when one is chosen (e.g. `eval_task=math`), else the evaluation task of the
run's (or this config's) `data.task`.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dftlab import checkpoints, checks
from dftlab.config import instantiate
from dftlab.embedded_base import resolve_model
from dftlab.errors import ConfigError
from dftlab.evaluation import vllm_backend
from dftlab.evaluation.report import ModelResults, evaluate_model, load_for_generation, rows
from dftlab.evaluation.settings import EvalSettings
from dftlab.evaluation.table import describe, format_table
from dftlab.models import is_lora, load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ["model", "mode", "split", "n", "k", "temperature", "top_p", "acc", "ci95_lo", "ci95_hi",
                   "pass_at_k", "well_formed"]


@dataclass
class Target:
    label: str  # what is evaluated, as the table names it
    model_cfg: DictConfig  # a `model` config whose name_or_path is loadable (a directory or hub name)
    data_cfg: DictConfig  # the `data` config the task comes from
    weights: dict | None = None  # a checkpoint's weights for that model


def _run_config(path: Path, key: str) -> DictConfig:
    config = path / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{key}={path}: not a run directory (no config.yaml)")
    return OmegaConf.load(config)


def target(cfg: DictConfig) -> Target:
    if cfg.run and cfg.ckpt:
        raise ConfigError(f"run={cfg.run} and ckpt={cfg.ckpt}: give one of them")
    if cfg.run:
        run_dir = Path(cfg.run).expanduser()
        run_cfg = _run_config(run_dir, "run")
        export = run_dir / "export"
        if not (export / "config.json").is_file():
            raise ConfigError(f"run={cfg.run}: {export} holds no exported model (the run did not finish: "
                              f"evaluate one of its checkpoints with ckpt=)")
        # the export is a plain model (safetensors, LoRA merged), whatever the run started from (a GGUF file)
        model_cfg = OmegaConf.merge(run_cfg.model, {"name_or_path": str(export), "tokenizer": None, "gguf_file": None,
                                                    "lora": {"r": 0}})
        return Target(run_dir.name, model_cfg, run_cfg.data)
    if cfg.ckpt:
        ckpt = Path(cfg.ckpt).expanduser()
        if ckpt.is_dir():
            raise ConfigError(f"ckpt={cfg.ckpt}: a sharded (distributed) checkpoint folder; evaluate the run's "
                              f"export with run=<its run directory>")
        if not ckpt.is_file():
            raise ConfigError(f"ckpt={cfg.ckpt}: no such file")
        weights = _checkpoint_weights(ckpt)
        run_dir = ckpt.parent.parent  # <run>/checkpoints/<name>.ckpt
        if (run_dir / "config.yaml").is_file():
            run_cfg = _run_config(run_dir, "ckpt")
            label = f"{run_dir.name}/{ckpt.name}"
        else:
            log.info("no config.yaml beside %s: its model is this config's `model`", ckpt)
            run_cfg, label = cfg, ckpt.name
        return Target(label, resolve_model(run_cfg), run_cfg.data, weights)
    if cfg.model.name_or_path is None:
        raise ConfigError("model.name_or_path is null (fresh weights): give run=<run dir>, ckpt=<checkpoint> or "
                          "model.name_or_path=<model directory or hub name>")
    label = str(cfg.model.name_or_path)
    return Target(label, resolve_model(cfg), cfg.data)


def _task(cfg: DictConfig, data_cfg: DictConfig):
    if cfg.get("eval_task"):
        return instantiate(cfg.eval_task)
    task = instantiate(data_cfg.task)
    if task.eval_task is None:
        raise ConfigError(f"data.task ({type(task).__name__}) has no evaluation task: choose one, e.g. eval_task=math")
    return task.eval_task


def _checkpoint_weights(ckpt: Path) -> dict:
    """The language model's weights in a Lightning checkpoint of a dftlab run."""
    state = checkpoints.read(ckpt, "ckpt")  # no code runs from the file; a bad file is named in one line
    prefix = "policy.lm."
    weights = {k.removeprefix(prefix): v for k, v in state.get("state_dict", {}).items() if k.startswith(prefix)}
    if not weights:
        raise ConfigError(f"ckpt={ckpt}: not a dftlab checkpoint (no {prefix}* weights in its state_dict)")
    return weights


def _checkpoint_model(t: Target, tokenizer) -> torch.nn.Module:
    """The model of `t.model_cfg` with the checkpoint's weights (its own without a checkpoint)."""
    lm = load_causal_lm(t.model_cfg, tokenizer)
    missing, unexpected = lm.load_state_dict(t.weights, strict=False) if t.weights is not None else ([], [])
    if missing or unexpected:
        raise ConfigError(f"ckpt: the checkpoint's weights do not fit model.name_or_path={t.model_cfg.name_or_path} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]}): is it this run's checkpoint?")
    if is_lora(lm):
        lm = lm.merge_and_unload()
    return lm.eval().to("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def generation_model(t: Target, tokenizer, settings: EvalSettings):
    """The target's model, ready to generate with the chosen backend (a vLLM engine is released after)."""
    trust = bool(t.model_cfg.get("trust_remote_code"))
    with ExitStack() as stack:
        if t.weights is None and not t.model_cfg.get("gguf_file"):  # a GGUF file loads through load_causal_lm
            lm = load_for_generation(t.model_cfg.name_or_path, settings, trust)
        else:
            lm = _checkpoint_model(t, tokenizer)
            if settings.backend == "vllm":  # vLLM loads models from directories only
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                lm.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                lm = load_for_generation(tmp, settings, trust)
        if isinstance(lm, vllm_backend.VLLMModel):
            stack.callback(vllm_backend.release, lm)
        yield lm


def _evaluate(t: Target, tokenizer, task, settings: EvalSettings) -> ModelResults:
    with generation_model(t, tokenizer, settings) as lm:
        return evaluate_model(lm, tokenizer, task, settings)


def load_target_tokenizer(t: Target):
    try:
        return load_tokenizer(t.model_cfg)
    except OSError as err:  # not a model directory, or a hub name that cannot be reached
        raise ConfigError(f"model.name_or_path={t.model_cfg.name_or_path}: {err}") from None


def write_outputs(out: Path, label: str, results: ModelResults, settings: EvalSettings) -> None:
    """`results.jsonl` (every problem with its split, mode, completions and verdicts) and
    `summary.csv` (one row per mode and split)."""
    out.mkdir(parents=True, exist_ok=True)
    modes = [("greedy", results.greedy, 1, 0.0, 1.0)]
    if results.sampled is not None:
        s = settings.samples
        modes.append((s.name, results.sampled, s.n, s.temperature, s.top_p))
    with open(out / RESULTS, "w") as f:
        for mode, by_split, *_ in modes:
            for split, r in by_split.items():
                f.writelines(json.dumps({"split": split, "mode": mode, **rec}) + "\n" for rec in r.records)
    with open(out / SUMMARY, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_COLUMNS)
        for mode, by_split, k, temperature, top_p in modes:
            for split, r in by_split.items():
                w.writerow([label, mode, split, r.n, k, temperature, top_p, r.accuracy, *r.ci,
                            "" if r.pass_at_k is None else r.pass_at_k, r.well_formed])


def evaluate_from_config(cfg: DictConfig) -> dict:
    """Evaluate as configured; returns the rows of `summary.csv` as a dict (greedy, sampled)."""
    settings = EvalSettings.from_cfg(cfg.eval, cfg.seed)
    if not (cfg.run or cfg.ckpt):  # the model named here: checked before the embedded base is built
        checks.model_architecture(cfg)
        checks.chat_template(cfg, [("eval_task" if cfg.get("eval_task") else "data.task", _task(cfg, cfg.data))])
    t = target(cfg)
    tokenizer = load_target_tokenizer(t)
    task = _task(cfg, t.data_cfg)
    checks.tokenizer_chat_template(task, tokenizer, "eval_task" if cfg.get("eval_task") else "data.task", t.label)
    log.info("evaluating %s on %s (%s) with %s", t.label, task.name, ", ".join(task.test_splits), settings.backend)
    results = _evaluate(t, tokenizer, task, settings)
    out = Path(cfg.paths.output_dir)
    write_outputs(out, t.label, results, settings)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    table = rows(results)
    print(format_table({t.label: table["greedy"]}, "greedy accuracy (%)"))
    if table["sampled"] is not None:
        print()
        print(format_table({t.label: table["sampled"]}, describe(settings.samples)))
    log.info("results in %s", out)
    return table

