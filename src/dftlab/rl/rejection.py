"""Rejection sampling: `n` completions of every training prompt from a model, graded by the task's
verifier, written as training data (the DFT paper's offline setting, its section 4.2).

    python generate.py                                   # the embedded base, the game, n=4, T=1.0
    python generate.py run=logs/runs/<run> n=8           # any run's export, checkpoint or model

Output folder (`out`, by default the run directory `logs/samples/<run_id>`):

    shards/<k>.jsonl   every prompt of shard k with its samples and verdicts; written whole, so a
                       restarted command (the same `run_id`) skips the shards it finished
    accepted.jsonl     {prompt, response}: every correct completion (RFT / DFT data; `dedup`: distinct ones)
    pairs.jsonl        {prompt, chosen, rejected}: a correct and an incorrect completion of one prompt (DPO data)
    counts.json        prompts, samples, acceptance rate, prompts with >= 1 correct, pairs, ...
    spec.json          what was sampled (a restart with other settings is refused)

A completion cut by `max_new_tokens` is neither accepted nor used as a rejected response (it is
not what the model would have said): it is counted (`truncated`), and so are prompts whose every
sample was cut (`prompts_all_truncated`), empty completions (`empty`: no response to train on) and
rows the grader cannot grade (`ungradable`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from dftlab.errors import ConfigError
from dftlab.rl.grading import usable
from dftlab.rl.sampling import Sample, sample_and_grade

log = logging.getLogger(__name__)

SHARDS = "shards"
ACCEPTED = "accepted.jsonl"
PAIRS = "pairs.jsonl"
COUNTS = "counts.json"
SPEC = "spec.json"


@dataclass(frozen=True)
class Settings:
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int | None = None  # None: the grader's
    max_prompts: int | None = None
    shard_size: int = 512
    batch_size: int = 512  # sequences per generate call
    seed: int = 0
    dedup: bool = False  # accepted and paired responses: distinct texts per prompt only
    max_pairs_per_prompt: int | None = None  # None: as many disjoint pairs as there are

    def __post_init__(self) -> None:
        checks = {
            "n": (self.n >= 1, ">= 1"),
            "temperature": (self.temperature > 0, "> 0 (rejection sampling samples)"),
            "top_p": (0 < self.top_p <= 1, "in (0, 1]"),
            "max_new_tokens": (self.max_new_tokens is None or self.max_new_tokens >= 1, "null or >= 1"),
            "max_prompts": (self.max_prompts is None or self.max_prompts >= 1, "null (all) or >= 1"),
            "shard_size": (self.shard_size >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "max_pairs_per_prompt": (self.max_pairs_per_prompt is None or self.max_pairs_per_prompt >= 1,
                                     "null (all) or >= 1"),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not allowed: {allowed}")


def _write_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _shard_record(index: int, row: dict, samples: list[Sample]) -> dict:
    kept = {k: row[k] for k in ("response", "answer", "id") if k in row}
    return {"index": index, "prompt": row["prompt"], **kept,
            "samples": [{"text": s.text, "correct": s.correct, "finished": s.finished, "reward": s.reward,
                         "n_tokens": len(s.ids)} for s in samples]}


def _check_spec(out: Path, spec: dict) -> None:
    path = out / SPEC
    if path.exists():
        old = json.loads(path.read_text())
        if old != spec:
            diff = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise ConfigError(f"{out} holds samples made with other settings ({', '.join(diff)} differ): give another "
                              f"out (or run_id), or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec, indent=2))


def sample_dataset(lm, tokenizer, rows: list[dict], grader, out: Path, settings: Settings, *, chat_template: bool,
                   spec: dict) -> dict:
    """Sample and grade every usable row, shard by shard (finished shards are skipped), then write
    the datasets and counts; returns the counts."""
    out = Path(out)
    rows = rows[: settings.max_prompts]
    _check_spec(out, {**spec, **asdict(settings), "prompts": len(rows)})
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    max_new = settings.max_new_tokens or grader.max_new_tokens()
    indexed = [(i, r) for i, r in enumerate(rows) if usable(grader, r)]
    shards = [indexed[s : s + settings.shard_size] for s in range(0, len(indexed), settings.shard_size)]
    for k, shard in enumerate(shards):
        path = out / SHARDS / f"{k:05d}.jsonl"
        if path.exists():
            continue
        samples = sample_and_grade(
            lm, tokenizer, grader, [r for _, r in shard], n=settings.n, temperature=settings.temperature,
            top_p=settings.top_p, max_new_tokens=max_new, batch_size=settings.batch_size,
            seed=settings.seed * 1_000_003 + k, chat_template=chat_template,
        )
        _write_atomic(path, [json.dumps(_shard_record(i, r, s)) for (i, r), s in zip(shard, samples)])
        log.info("rejection sampling: shard %d of %d written (%s)", k + 1, len(shards), path)
    return write_datasets(out, settings, n_rows=len(rows), n_shards=len(shards))


def _read_shards(out: Path, n_shards: int) -> list[dict]:
    records = []
    for k in range(n_shards):
        with open(out / SHARDS / f"{k:05d}.jsonl") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def _distinct(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def write_datasets(out: Path, settings: Settings, n_rows: int, n_shards: int) -> dict:
    """accepted.jsonl, pairs.jsonl and counts.json from the shards."""
    records = _read_shards(out, n_shards)
    accepted, pairs = [], []
    c = {"n": settings.n, "prompts": n_rows, "ungradable": n_rows - len(records), "sampled_prompts": len(records),
         "samples": 0, "correct": 0, "truncated": 0, "empty": 0, "prompts_with_correct": 0, "prompts_all_correct": 0,
         "prompts_all_truncated": 0, "pairs": 0, "prompts_with_pairs": 0}
    for rec in records:
        samples = rec["samples"]
        usable = [s for s in samples if s["finished"] and s["text"].strip()]
        good = [s["text"] for s in usable if s["correct"]]
        bad = [s["text"] for s in usable if not s["correct"]]
        c["samples"] += len(samples)
        c["empty"] += sum(s["finished"] and not s["text"].strip() for s in samples)
        c["correct"] += len(good)
        c["truncated"] += sum(not s["finished"] for s in samples)
        c["prompts_with_correct"] += bool(good)
        c["prompts_all_correct"] += len(good) == len(samples)
        c["prompts_all_truncated"] += bool(samples) and not any(s["finished"] for s in samples)
        if settings.dedup:
            good, bad = _distinct(good), _distinct(bad)
        extra = {k: rec[k] for k in ("answer", "id") if k in rec}
        accepted += [{"prompt": rec["prompt"], "response": g, "index": rec["index"], **extra} for g in good]
        rng = random.Random(f"{settings.seed}:{rec['index']}")
        chosen, rejected = rng.sample(good, len(good)), rng.sample(bad, len(bad))
        mine = list(zip(chosen, rejected))[: settings.max_pairs_per_prompt]
        pairs += [{"prompt": rec["prompt"], "chosen": g, "rejected": b, "index": rec["index"], **extra}
                  for g, b in mine]
        c["pairs"] += len(mine)
        c["prompts_with_pairs"] += bool(mine)
    c["acceptance_rate"] = c["correct"] / max(c["samples"], 1)
    c["accepted_rows"] = len(accepted)
    _write_atomic(out / ACCEPTED, [json.dumps(r) for r in accepted])
    _write_atomic(out / PAIRS, [json.dumps(r) for r in pairs])
    _write_atomic(out / COUNTS, [json.dumps(c, indent=2)])
    return c


def format_counts(c: dict) -> str:
    return (f"rejection sampling: {c['sampled_prompts']} prompts x {c['n']} "
            f"samples; acceptance rate {100 * c['acceptance_rate']:.1f}% ({c['correct']} of {c['samples']}); "
            f"{c['prompts_with_correct']} prompts with >= 1 correct ({c['prompts_all_correct']} all correct); "
            f"{c['pairs']} pairs from {c['prompts_with_pairs']} prompts; {c['accepted_rows']} accepted rows; "
            f"{c['truncated']} samples cut by max_new_tokens ({c['prompts_all_truncated']} prompts all cut); "
            f"{c['ungradable']} ungradable prompts")
