"""Accuracy against the decoding temperature, for finished runs: does a loss win because it reasons
better, or because it is sharper and so loses less when sampled?

    python -m dftlab.reporting.temperature logs/studies/temperature --out docs/figures/temperature

For every finished run (its export), on the test splits and problems of its end-of-run evaluation:
greedy accuracy, and Average@k and pass@k at each temperature and top_p of the grid; the mean
entropy of the model's next-token distribution along the reference solutions of the same problems
(the same tokens for every model, so it compares the models, not their outputs: the histograms'
`entropy_mean`, on the test prompts); and, for the runs named by `--tune` (SFT by default), the
temperature of `--tune-grid` that maximises Average@k on the run's validation problems, and its
test accuracy at that temperature.

Every measurement is cached in the run directory, `decoding/<setting>-<part>-<key>/` (summary.json
and every problem's completions and verdicts), keyed by all it depends on (the setting, the
problems, the sampling seed and batch size, the export's files); the run's own end-of-run
evaluation serves the settings it measured (greedy, and its `eval.samples`). A rerun only renders.

Writes `<out>.md` (and prints it), `<out>.csv` (one row per loss, setting and group of splits),
`<out>_runs.csv` (one row per run, setting and split) and `<out>.png` (accuracy against
temperature, a line per loss, the band from the lowest to the highest seed).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dftlab.config import instantiate
from dftlab.data.collate import collate
from dftlab.data.encode import encode
from dftlab.errors import ConfigError
from dftlab.eval_run import target
from dftlab.evaluation.report import load_for_generation, row
from dftlab.evaluation.runner import generate_and_score, select, summarise, verdicts
from dftlab.evaluation.settings import EvalSettings, Sampling
from dftlab.losses import build_loss
from dftlab.models import eval_mode, load_tokenizer
from dftlab.objective import CausalLMWithLoss
from dftlab.reporting import study
from dftlab.reporting.runs import Run, load_run
from dftlab.run import quiet_logs

CACHE = "decoding"
SUMMARY = "summary.json"
TEMPERATURES = (0.0, 0.3, 0.6, 1.0)
TOP_P = (1.0, 0.95)
TUNE_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ENTROPY_BATCH = 64


@dataclass(frozen=True)
class Decoding:
    temperature: float  # 0: greedy
    top_p: float
    k: int

    @classmethod
    def make(cls, temperature: float, top_p: float, k: int) -> Decoding:
        return cls(0.0, 1.0, 1) if temperature == 0 else cls(float(temperature), float(top_p), int(k))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def tag(self) -> str:
        return "greedy" if self.greedy else f"t{self.temperature:g}_p{self.top_p:g}_k{self.k}"

    @property
    def label(self) -> str:
        if self.greedy:
            return "greedy"
        return f"T {self.temperature:g}" + ("" if self.top_p == 1 else f", top_p {self.top_p:g}")

    def sampling(self) -> Sampling | None:
        return None if self.greedy else Sampling(self.k, self.temperature, self.top_p)


@dataclass
class Options:
    """What to measure; None: as the run's own end-of-run evaluation did."""

    splits: list[str] | None = None
    max_problems: int | None = None
    batch_size: int | None = None
    seed: int | None = None


def _files_key(folder: Path) -> list:
    """The export's files by name and content: a retrained run invalidates its cache, a copied one keeps it."""
    out = []
    for p in sorted(q for q in folder.iterdir() if q.is_file()):
        h = hashlib.sha1()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        out.append((p.name, h.hexdigest()))
    return out


class RunMeasures:
    """One finished run's measurements, from its cache or computed (the model loads only then)."""

    def __init__(self, run: Run, options: Options):
        self.run = run
        cfg = OmegaConf.create(run.config)
        # what the run's own evaluation measured
        self.own = EvalSettings.from_cfg(cfg.eval, cfg.seed, bool(cfg.trainer.get("fast_dev_run")))
        chosen = {k: v for k, v in dataclasses.asdict(options).items() if v is not None}
        self.settings = dataclasses.replace(self.own, samples=None, **chosen)
        self.target = target(OmegaConf.create({"run": str(run.path), "ckpt": None}))
        self.max_length = int(cfg.data.max_length)
        self.computed = 0  # measurements made (not read back) by this object
        self.seconds = 0.0  # what the measurements it made or read back took to make

    @cached_property
    def export_key(self) -> list:
        return _files_key(Path(self.target.model_cfg.name_or_path))

    @cached_property
    def task(self):
        return instantiate(self.target.data_cfg.task)

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.target.model_cfg)

    def _load(self, settings: EvalSettings):
        return load_for_generation(
            self.target.model_cfg.name_or_path, settings, bool(self.target.model_cfg.get("trust_remote_code"))
        )

    @cached_property
    def lm(self):
        return self._load(self.settings)

    @cached_property
    def scorer(self):
        """The Hugging Face model, for the teacher-forced pass (a vLLM engine only generates)."""
        return (
            self.lm if self.settings.backend != "vllm" else self._load(dataclasses.replace(self.settings, backend="hf"))
        )

    def _problems(self, part: str) -> dict[str, list[dict]]:
        task = self.task.eval_task
        if part == "test":
            return select(task, self.settings.splits, self.settings.max_problems)
        if task is not self.task:
            raise ConfigError(
                f"{self.run.path}: the validation problems of {type(self.task).__name__} are not "
                f"scored by its evaluation task: no temperature can be tuned on them (drop --tune)"
            )
        return {"val": self.task.val()[: self.settings.max_problems]}

    def _folder(self, name: str, part: str, spec: dict) -> Path:
        s = self.settings
        key = {
            **spec,
            "part": part,
            "splits": s.splits,
            "max_problems": s.max_problems,
            "seed": s.seed,
            "batch_size": s.batch_size,
            "backend": s.backend,
            "export": self.export_key,
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        return self.run.path / CACHE / f"{name}-{part}-{digest}"

    def _own_rows(self, d: Decoding) -> dict[str, dict] | None:
        """The run's end-of-run evaluation, when it measured exactly this (same problems, seed, batch)."""
        if dataclasses.replace(self.settings, samples=self.own.samples) != self.own:
            return None
        if d.greedy:
            return study.rows(self.run, "greedy")
        if d.sampling() == self.own.samples:
            return study.rows(self.run, "sampled")
        return None

    def accuracy(self, d: Decoding, part: str = "test") -> dict[str, dict]:
        """`{split: row}` (n, acc, ci95, well_formed, pass) at decoding `d` on the test splits or `val`."""
        if part == "test" and (own := self._own_rows(d)):
            return own
        folder = self._folder(d.tag, part, dataclasses.asdict(d))
        if (folder / SUMMARY).is_file():
            return self._read(folder)["rows"]
        start = time.time()
        records = generate_and_score(
            self.lm,
            self.tokenizer,
            self.task.eval_task,
            self._problems(part),
            n_samples=d.k,
            temperature=d.temperature,
            top_p=d.top_p,
            batch_size=self.settings.batch_size,
            seed=self.settings.seed,
        )
        results = {name: summarise(name, *verdicts(recs), recs) for name, recs in records.items()}
        rows = {name: row(r) for name, r in results.items()}
        files = {f"{name}.jsonl": "".join(json.dumps(rec) + "\n" for rec in r.records) for name, r in results.items()}
        summary = {"decoding": dataclasses.asdict(d), "rows": rows, "seconds": time.time() - start}
        self._store(folder, {SUMMARY: json.dumps(summary, indent=2), **files})
        return rows

    def _read(self, folder: Path) -> dict:
        summary = json.loads((folder / SUMMARY).read_text())
        self.seconds += summary["seconds"]
        return summary

    def entropy(self) -> dict[str, dict]:
        """`{split: {"nats", "tokens"}}`: the mean entropy of the next-token distribution at every
        target token of the reference solutions (teacher-forced), per test split."""
        folder = self._folder("entropy", "test", {})
        if (folder / SUMMARY).is_file():
            return self._read(folder)["splits"]
        start, out = time.time(), {}
        for name, problems in self._problems("test").items():
            if not all("response" in p for p in problems):
                continue  # no reference solutions (a benchmark's answers only)
            total, count = self._reference_entropy(problems)
            out[name] = {"nats": total / max(count, 1), "tokens": count}
        self._store(folder, {SUMMARY: json.dumps({"splits": out, "seconds": time.time() - start}, indent=2)})
        return out

    @torch.no_grad()
    def _reference_entropy(self, problems: list[dict]) -> tuple[float, int]:
        tok, lm = self.tokenizer, self.scorer
        chat = self.task.eval_task.chat_template
        encoded = [encode(tok, p["prompt"], p["response"], self.max_length, chat) for p in problems]
        items = [(i, e, 0) for i, e in enumerate(encoded) if e is not None]
        device = next(lm.parameters()).device
        scorer = CausalLMWithLoss(lm, build_loss("sft"))  # its token statistics: the one place they are computed
        total, count = 0.0, 0
        with eval_mode(lm):
            for start in range(0, len(items), ENTROPY_BATCH):
                batch = collate(items[start : start + ENTROPY_BATCH], tok.pad_token_id)
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                stats, ent = scorer.token_stats(batch, entropy=True)
                total += float(ent.double().sum())
                count += int(stats.logp.numel())
        return total, count

    def _store(self, folder: Path, files: dict[str, str]) -> None:
        """Written whole or not at all: into a temporary folder, then one rename."""
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (tmp / name).write_text(text)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        self.computed += 1
        self.seconds += json.loads(files[SUMMARY])["seconds"]

    def tune(self, grid: list[float], k: int) -> tuple[float, dict[float, float]]:
        """The temperature of `grid` (top_p 1) with the highest validation Average@k (the lowest on a
        tie), and the validation Average@k at each."""
        val = {t: self.accuracy(Decoding.make(t, 1.0, k), "val")["val"]["acc"] for t in grid}
        return max(grid, key=lambda t: (val[t], -t)), val


# --- the report -----------------------------------------------------------------------------


@dataclass
class Tuned:
    seed: int
    temperature: float
    val: dict[float, float]
    rows: dict[str, dict]  # test splits at that temperature


def grid_of(temperatures: list[float], top_ps: list[float], k: int) -> list[Decoding]:
    """Greedy first (once, whatever top_p), then each temperature at each top_p."""
    out = [Decoding.make(0, 1, k)] if 0 in temperatures else []
    return out + [Decoding.make(t, p, k) for p in top_ps for t in temperatures if t > 0]


def measure_run(m: RunMeasures, settings: list[Decoding], tune_grid: list[float] | None, k: int):
    """One run's accuracy at every setting, its entropy, and (with a `tune_grid`) its tuned temperature."""
    acc = {d: m.accuracy(d) for d in settings}
    ent = m.entropy()
    if tune_grid is None:
        return acc, ent, None
    t, val = m.tune(tune_grid, k)
    return acc, ent, Tuned(m.run.get("seed"), t, val, m.accuracy(Decoding.make(t, 1.0, k)))


def _fill(job: tuple) -> int:
    """In a worker process of one thread: measure one run into its cache; how many were made."""
    path, settings, options, tune_grid, k = job
    torch.set_num_threads(1)
    quiet_logs()
    m = RunMeasures(load_run(path), options)
    measure_run(m, settings, tune_grid, k)
    return m.computed


def measure_all(
    runs: list[Run],
    settings: list[Decoding],
    options: Options,
    tune: list[str],
    tune_grid: list[float],
    k: int,
    jobs: int = 1,
):
    """Per row label (a run's `run_name`): accuracies `{decoding: {seed: rows}}`, entropies
    `{seed: {split: ...}}`, tuned `[Tuned]`; how many measurements were made, and the seconds that all
    of them (made now or read back) took to make. With `jobs` > 1
    the runs are measured first by that many processes of one thread each, then read back: the
    generation of a model this small gains little from a second thread (measured on two cores: 383
    completions/s with one thread, 490/s with two), and much from a second process."""
    measures: dict[str, dict[int, RunMeasures]] = {}
    for r in runs:
        label, seed = r.get("run_name"), r.get("seed")
        if seed in measures.setdefault(label, {}):
            raise SystemExit(f"{measures[label][seed].run.path} and {r.path} are both run_name={label}, seed={seed}")
        measures[label][seed] = RunMeasures(r, options)
    unknown = [t for t in tune if t not in measures]
    if unknown:
        raise SystemExit(f"--tune {' '.join(unknown)}: no such run_name among the runs ({', '.join(measures)})")
    computed = 0
    if jobs > 1:
        work = [
            (str(m.run.path), settings, options, tune_grid if label in tune else None, k)
            for label, by_seed in measures.items()
            for m in by_seed.values()
        ]
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            computed = sum(pool.map(_fill, work))
    acc, ent, tuned = {}, {}, {}
    for label, by_seed in measures.items():
        acc[label], ent[label] = {d: {} for d in settings}, {}
        for s, m in by_seed.items():
            by_d, ent[label][s], t = measure_run(m, settings, tune_grid if label in tune else None, k)
            for d, rows in by_d.items():
                acc[label][d][s] = rows
            if t is not None:
                tuned.setdefault(label, []).append(t)
    made = [m for by_seed in measures.values() for m in by_seed.values()]
    return acc, ent, tuned, computed + sum(m.computed for m in made), sum(m.seconds for m in made)


def _first_rows(acc) -> dict[str, dict]:
    """`{split: row}` of the first run and setting: the splits every table has."""
    by_d = next(iter(acc.values()))
    return next(iter(next(iter(by_d.values())).values()))


def group_entropy(by_split: dict[str, dict], splits: list[str]) -> float | None:
    """Token-weighted mean over `splits`."""
    parts = [by_split[s] for s in splits if s in by_split]
    tokens = sum(p["tokens"] for p in parts)
    return sum(p["nats"] * p["tokens"] for p in parts) / tokens if tokens else None


def _mean_std(values: list[float], scale: float = 100, fmt: str = ".1f") -> str:
    if not values:
        return "-"
    spread = f" ± {scale * statistics.stdev(values):{fmt}}" if len(values) > 1 else ""
    return f"{scale * statistics.fmean(values):{fmt}}{spread}"


def _pass(rows_by_seed: dict[int, dict], splits: list[str]) -> list[float]:
    return [
        statistics.fmean(r[s]["pass"] for s in splits)
        for r in rows_by_seed.values()
        if all("pass" in r[s] for s in splits)
    ]


def render(acc, ent, tuned, settings: list[Decoding], k: int, out: Path, runs: list[Run], seconds: float) -> str:
    first = _first_rows(acc)
    split_groups = study.groups(first)
    parts, csv_rows = [], []
    for group, splits in split_groups.items():
        head = "| | entropy (nats) | " + " | ".join(d.label for d in settings) + " |"
        lines = [
            f"### Average@{k} (%) against the decoding temperature, {group} ({', '.join(splits)})",
            "",
            head,
            "|---" * (len(settings) + 2) + "|",
        ]
        pass_lines = [
            f"### pass@{k} (%), {group}",
            "",
            "| | " + " | ".join(d.label for d in settings if not d.greedy) + " |",
            "|---" * (sum(not d.greedy for d in settings) + 1) + "|",
        ]
        for label, by_d in acc.items():
            h = [v for v in (group_entropy(e, splits) for e in ent[label].values()) if v is not None]
            row_cells = []
            for d in settings:
                c = study.pooled(list(by_d[d].values()), splits, d.k)
                row_cells.append(c.markdown())
                passes = _pass(by_d[d], splits) if not d.greedy else []
                csv_rows.append(
                    [
                        label,
                        d.tag,
                        d.temperature,
                        d.top_p,
                        d.k,
                        group,
                        len(c.values),
                        c.mean,
                        c.std,
                        *c.ci,
                        statistics.fmean(passes) if passes else "",
                        statistics.fmean(h) if h else "",
                    ]
                )
            n = len(next(iter(by_d.values())))
            name = f"{label} ({n} seed{'s' if n > 1 else ''})"
            lines.append(f"| {name} | {_mean_std(h, 1, '.3f')} | " + " | ".join(row_cells) + " |")
            pass_lines.append(
                f"| {name} | " + " | ".join(_mean_std(_pass(by_d[d], splits)) for d in settings if not d.greedy) + " |"
            )
        parts += ["\n".join(lines), "\n".join(pass_lines)]
    for label, tuned_runs in tuned.items():
        lines = [
            f"### {label} with its temperature tuned on the validation split (top_p 1, Average@{k}, %)",
            "",
            "| seed | temperature | validation | " + " | ".join(split_groups) + " |",
            "|---" * (len(split_groups) + 3) + "|",
        ]
        for t in tuned_runs:
            lines.append(
                f"| {t.seed} | {t.temperature:g} | {100 * t.val[t.temperature]:.1f} | "
                + " | ".join(study.pooled([t.rows], s, k).markdown() for s in split_groups.values())
                + " |"
            )
        pooled_cells = {g: study.pooled([t.rows for t in tuned_runs], s, k) for g, s in split_groups.items()}
        temps = [t.temperature for t in tuned_runs]
        lines.append(
            f"| all ({len(tuned_runs)}) | {_mean_std(temps, 1, '.2f')} | "
            f"{_mean_std([t.val[t.temperature] for t in tuned_runs])} | "
            + " | ".join(c.markdown() for c in pooled_cells.values())
            + " |"
        )
        for g, c in pooled_cells.items():
            csv_rows.append(
                [
                    f"{label} tuned",
                    "tuned",
                    statistics.fmean(temps),
                    1.0,
                    k,
                    g,
                    len(c.values),
                    c.mean,
                    c.std,
                    *c.ci,
                    "",
                    "",
                ]
            )
        grid = sorted(tuned_runs[0].val)
        lines += [
            "",
            f"Validation grid: temperatures {', '.join(f'{t:g}' for t in grid)}; validation Average@{k} "
            f"per seed: "
            + "; ".join(f"seed {t.seed}: " + ", ".join(f"{100 * t.val[x]:.1f}" for x in grid) for t in tuned_runs)
            + ".",
        ]
        parts.append("\n".join(lines))
    n = next(iter(first.values()))["n"]
    parts.append(
        f"Each cell: mean ± standard deviation over seeds [95% Wilson interval of all problems and samples of all "
        f"seeds pooled], in %; a group of splits: per seed the mean over its splits. {n} problems a split, k = {k} "
        f"samples at each temperature; greedy is one completion. Entropy: the mean entropy of the next-token "
        f"distribution along the reference solutions of the same problems (teacher-forced, every target token), "
        f"mean ± std over seeds. {len(runs)} runs. {study.wall_times(runs)} The measurements of this report took "
        f"{seconds / 60:.1f} min in all (summed over processes; the settings of the runs' own evaluation not counted)."
    )
    text = "\n\n".join(parts) + "\n"
    study.write_outputs(
        out,
        text,
        [
            "row",
            "decoding",
            "temperature",
            "top_p",
            "k",
            "group",
            "seeds",
            "mean",
            "std",
            "ci95_lo",
            "ci95_hi",
            "pass_at_k",
            "entropy",
        ],
        csv_rows,
    )
    return text


def write_run_rows(acc, out: Path) -> None:
    with open(study.with_suffix(out, "_runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["row", "seed", "decoding", "temperature", "top_p", "k", "split", "n", "acc", "pass_at_k", "well_formed"]
        )
        for label, by_d in acc.items():
            for d, by_seed in by_d.items():
                for seed, rows in by_seed.items():
                    for split, r in rows.items():
                        w.writerow(
                            [
                                label,
                                seed,
                                d.tag,
                                d.temperature,
                                d.top_p,
                                d.k,
                                split,
                                r["n"],
                                r["acc"],
                                r.get("pass", ""),
                                r["well_formed"],
                            ]
                        )


def plot(acc, ent, tuned, settings: list[Decoding], k: int, out: Path) -> Path:
    from dftlab.reporting.study_plot import Panel, Series, plot_grid

    split_groups = study.groups(_first_rows(acc))
    top_ps = list(dict.fromkeys(d.top_p for d in settings if not d.greedy)) or [1.0]
    greedy = [d for d in settings if d.greedy]
    grid = []
    for top_p in top_ps:
        row_panels = []
        chosen = greedy + [d for d in settings if not d.greedy and d.top_p == top_p]
        for group, splits in split_groups.items():
            panel = Panel(f"{group}, top_p {top_p:g}", f"Average@{k} (%)")
            for label, by_d in acc.items():
                per_seed = [
                    [statistics.fmean(rows[s]["acc"] for s in splits) for rows in by_d[d].values()] for d in chosen
                ]
                h = [v for v in (group_entropy(e, splits) for e in ent[label].values()) if v is not None]
                name = f"{label} (entropy {statistics.fmean(h):.3f})" if h else label
                panel.series[name] = Series(
                    [d.temperature for d in chosen],
                    [100 * statistics.fmean(v) for v in per_seed],
                    [100 * min(v) for v in per_seed],
                    [100 * max(v) for v in per_seed],
                )
            if top_p == 1.0:
                for label, runs in tuned.items():
                    v = [statistics.fmean(t.rows[s]["acc"] for s in splits) for t in runs]
                    panel.series[f"{label}, temperature tuned on val"] = Series(
                        [statistics.fmean(t.temperature for t in runs)],
                        [100 * statistics.fmean(v)],
                        [100 * min(v)],
                        [100 * max(v)],
                        point=True,
                    )
            row_panels.append(panel)
        grid.append(row_panels)
    temps = sorted({d.temperature for d in settings})
    return plot_grid(
        grid,
        study.with_suffix(out, ".png"),
        "Accuracy against the decoding temperature (band: lowest to highest seed; entropy in nats)",
        "temperature",
        temps,
        ["greedy" if t == 0 else f"{t:g}" for t in temps],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dftlab.reporting.temperature", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("paths", nargs="+", type=Path, help="multirun or run directories of finished runs")
    parser.add_argument(
        "--out", type=Path, help="output prefix: <out>.md, .csv, _runs.csv, .png (default: <first path>/temperature)"
    )
    parser.add_argument("--k", type=int, default=8, help="samples per problem at each temperature (default 8)")
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=list(TEMPERATURES), help="0 is greedy (default: 0 0.3 0.6 1)"
    )
    parser.add_argument("--top-p", type=float, nargs="+", default=list(TOP_P), help="default: 1 0.95")
    parser.add_argument(
        "--tune",
        nargs="*",
        default=["sft"],
        help="run_names whose temperature is tuned on the validation split (default: sft; none: no tuning)",
    )
    parser.add_argument(
        "--tune-grid",
        type=float,
        nargs="+",
        default=list(TUNE_GRID),
        help="temperatures tried on the validation split (default: 0.1 to 1 by 0.1)",
    )
    parser.add_argument("--splits", nargs="+", help="test splits (default: those of each run's own evaluation)")
    parser.add_argument("--max-problems", type=int, help="problems a split (default: as each run's own evaluation)")
    parser.add_argument(
        "--batch-size", type=int, help="sequences per generate call (default: the run's eval.batch_size)"
    )
    parser.add_argument("--seed", type=int, help="sampling seed (default: each run's seed)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes of one thread each that measure runs side by side (default 1; 2 on two cores)",
    )
    args = parser.parse_args(argv)
    if args.k < 1 or any(t < 0 for t in args.temperatures) or any(t <= 0 for t in args.tune_grid):
        parser.error("--k must be >= 1, --temperatures >= 0 and --tune-grid > 0")
    if any(not 0 < p <= 1 for p in args.top_p):
        parser.error("--top-p must be in (0, 1]")
    quiet_logs()
    runs = study.load_runs(args.paths)
    settings = grid_of(args.temperatures, args.top_p, args.k)
    options = Options(args.splits, args.max_problems, args.batch_size, args.seed)
    try:
        acc, ent, tuned, computed, seconds = measure_all(
            runs, settings, options, args.tune, args.tune_grid, args.k, args.jobs
        )
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    out = args.out or args.paths[0] / "temperature"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(acc, ent, tuned, settings, args.k, out, runs, seconds)
    write_run_rows(acc, out)
    plot(acc, ent, tuned, settings, args.k, out)
    print(f"{computed} measurements made, the rest read from the runs' caches", file=sys.stderr)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
