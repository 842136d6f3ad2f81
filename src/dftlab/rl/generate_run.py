"""Rejection sampling from a composed `generate.yaml` (what `generate.py` runs), and the cached
samples a training run asks for by their settings (`ensure_samples`), built on first use like the
embedded base."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dftlab.config import compose_config, instantiate
from dftlab.eval_run import generation_model, load_target_tokenizer, target
from dftlab.evaluation import vllm_backend
from dftlab.evaluation.settings import EvalSettings
from dftlab.rl.grading import grader_of
from dftlab.rl.rejection import COUNTS, Settings, format_counts, sample_dataset

log = logging.getLogger(__name__)

SETTINGS = tuple(Settings.__dataclass_fields__)


def settings_of(cfg: DictConfig) -> Settings:
    return Settings(**{k: cfg[k] for k in SETTINGS if k in cfg})


def generate_from_config(cfg: DictConfig) -> dict:
    """Sample, grade and write the datasets as configured; returns the counts."""
    settings = settings_of(cfg)
    t = target(cfg)
    tokenizer = load_target_tokenizer(t)
    task = instantiate(cfg.data.task)
    grader = grader_of(task, instantiate(cfg.grader) if cfg.get("grader") else None)
    vllm_args = OmegaConf.to_container(cfg.vllm, resolve=True) if cfg.get("vllm") else {}
    gen = EvalSettings(splits=None, max_problems=None, batch_size=settings.batch_size,
                       backend=vllm_backend.resolve(cfg.backend, "backend"), samples=None, vllm_args=vllm_args,
                       seed=cfg.seed)
    out = Path(cfg.out or cfg.paths.output_dir)
    spec = {"model": str(t.model_cfg.name_or_path), "weights": bool(t.weights), "task": type(task).__name__,
            "grader": type(grader).__name__}
    log.info("rejection sampling from %s: %s -> %s", t.label, settings, out)
    with generation_model(t, tokenizer, gen) as lm:
        counts = sample_dataset(lm, tokenizer, task.train(), grader, out, settings, chat_template=task.chat_template,
                                spec=spec)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    print(format_counts(counts))
    log.info("datasets in %s", out)
    return counts


def samples_key(cfg: DictConfig) -> str:
    """A hash of what the samples depend on (the model resolved to its directory)."""
    from dftlab.embedded_base import resolve_model

    keys = ("data", "grader", "run", "ckpt", "backend", *SETTINGS)
    spec = {k: OmegaConf.to_container(OmegaConf.select(cfg, k), resolve=True)
            if isinstance(OmegaConf.select(cfg, k), DictConfig) else OmegaConf.select(cfg, k) for k in keys}
    spec["data"].pop("cache_dir", None)
    spec["model"] = OmegaConf.to_container(resolve_model(cfg), resolve=True)
    spec["seed"] = cfg.seed
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]


def ensure_samples(overrides: list[str] | None = None) -> Path:
    """The folder of the rejection samples that `generate.yaml` with `overrides` makes, made first
    when missing (in `<cache>/samples-<key>`; an interrupted build resumes its shards)."""
    cfg = compose_config(list(overrides or []), config_name="generate")
    path = Path(cfg.paths.cache_dir) / f"samples-{samples_key(cfg)}"
    if not (path / COUNTS).exists():
        OmegaConf.update(cfg, "paths.output_dir", str(path))
        OmegaConf.update(cfg, "out", str(path))
        log.info("rejection samples missing: sampling them (once) into %s", path)
        generate_from_config(cfg)
    return path
