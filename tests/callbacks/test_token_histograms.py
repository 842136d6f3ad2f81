"""The token_histograms callback: exactly the subset's target tokens are counted, the same on one
rank as on two, and the counts reach the files, the plots and W&B."""

import csv
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from dftlab.callbacks.token_histograms import LOWEST_COLUMNS, TokenHistograms, subset_indices
from dftlab.config import compose_config, instantiate
from dftlab.errors import ConfigError
from dftlab.formats.token_probs import DIR, PAPER_EDGES, load_point
from dftlab.models import load_tokenizer
from dftlab.run import run
from tests.conftest import PYTHONPATH, ROOT, fast_cfg
from tests.helpers.token_histograms_run import N_EXAMPLES, OVERRIDES

POINTS = ("before", "step_000001", "step_000002")


def _lowest_table(run_dir) -> dict[int, tuple[int, float]]:
    with open(run_dir / DIR / "lowest_tokens.csv") as f:
        return {int(r["token_id"]): (int(r["count"]), float(r["mean_p"])) for r in csv.DictReader(f)}


def test_subset_depends_on_the_seed_and_the_dataset_size_only():
    subset = subset_indices(64, 39, seed=0)
    assert subset == subset_indices(64, 39, seed=0) == sorted(set(subset))
    assert len(subset) == 39 and 0 <= subset[0] and subset[-1] < 64
    assert subset != subset_indices(64, 39, seed=1)
    assert subset_indices(10, 39, seed=0) == list(range(10))


def _train_rows(cfg):
    tokenizer = load_tokenizer(cfg.model)
    data = instantiate(cfg.data, tokenizer=tokenizer)
    data.setup()
    return data.datasets["train"].rows, tokenizer


def test_counts_are_the_target_tokens_of_the_subset(runs):
    all_rows, tokenizer = _train_rows(compose_config([*OVERRIDES, f"paths.output_dir={runs / 'unused'}"]))
    rows = [all_rows[i] for i in subset_indices(len(all_rows), N_EXAMPLES, seed=0)]
    # the targets of an example: its response and the EOS ending it
    expected = Counter(t for r in rows for t in r.input_ids[r.prompt_len :])
    prompt_only = {t for r in rows for t in r.input_ids[: r.prompt_len]} - set(expected)
    assert expected[tokenizer.eos_token_id] == N_EXAMPLES and prompt_only
    for point in POINTS:
        h = load_point(runs / "sft", point)
        assert h.paper_counts.sum() == h.fine_counts.sum() == h.summary["n_tokens"] == sum(expected.values())
    counts = {token: n for token, (n, _) in _lowest_table(runs / "sft").items()}
    assert counts == dict(expected)  # EOS included; prompt tokens and padding nowhere
    assert tokenizer.pad_token_id not in counts and not prompt_only & set(counts)


def test_summaries_agree_with_the_bins(runs):
    for point in POINTS:
        h = load_point(runs / "dft", point)
        s, n = h.summary, h.summary["n_tokens"]
        assert s["frac_below_0.01"] == pytest.approx(h.paper_counts[PAPER_EDGES[1:] <= 0.01].sum() / n)
        assert s["frac_above_0.9"] <= h.paper_counts[-1] / n
        k = int(np.searchsorted(np.cumsum(h.fine_counts), n / 2))  # the fine bin holding the median
        assert h.fine_edges[k] <= s["median"] <= h.fine_edges[k + 1]
        assert 0 < s["mean"] < 1 and 0 < s["entropy_mean"] < np.log(40)
    before, after = load_point(runs / "sft", "before"), load_point(runs / "sft")
    assert after.step == 2 and after.summary["mean"] != before.summary["mean"]


def test_files_and_plots(runs):
    out = runs / "sft" / DIR
    for point in POINTS:
        lines = (out / f"{point}.csv").read_text().splitlines()
        assert lines[0] == "binning,lower,upper,count" and len(lines) == 1 + (len(PAPER_EDGES) - 1) + 100
        assert (out / f"{point}.png").stat().st_size > 1000
    assert (out / "before_vs_after.png").stat().st_size > 1000
    (csv_log,) = (runs / "dft" / "csv").rglob("metrics.csv")
    metrics = csv_log.read_text().splitlines()[0].split(",")
    for key in ("probs/frac_above_0.9", "probs/frac_below_0.01", "probs/mean", "probs/median", "probs/entropy_mean"):
        assert key in metrics, key


def test_wandb_gets_the_histogram_and_the_table(runs):
    (offline,) = (runs / "sft" / "wandb").glob("offline-run-*")
    tables = list((offline / "files" / "media" / "table").rglob("*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == LOWEST_COLUMNS and len(table["data"]) == len(_lowest_table(runs / "sft"))
    # wandb has no reader for its .wandb log: the keys are in its bytes
    (log,) = offline.glob("*.wandb")
    raw = log.read_bytes()
    for key in (b"probs/histogram_log10_p", b"probs/frac_above_0.9", b"probs/before_vs_after"):
        assert key in raw, key


def test_fast_dev_run_measures_one_batch(run_dir):
    cfg = fast_cfg(
        run_dir, "trainer.fast_dev_run=true", "eval.enabled=false", "callbacks.token_histograms.batch_size=4"
    )
    run(cfg)
    rows, _ = _train_rows(cfg)
    first_batch = [rows[i] for i in subset_indices(len(rows), 512, seed=0)[:4]]
    before, after = load_point(run_dir, "before"), load_point(run_dir)
    assert after.step == 1
    assert (
        before.summary["n_tokens"]
        == after.summary["n_tokens"]
        == sum(len(r.input_ids) - r.prompt_len for r in first_batch)
    )


def test_bad_settings_name_their_key():
    with pytest.raises(ConfigError, match="callbacks.token_histograms.fine_bins=513"):
        TokenHistograms(fine_bins=513)
    with pytest.raises(ConfigError, match="every_n_steps=0"):
        TokenHistograms(every_n_steps=0)


@pytest.mark.slow
def test_two_ranks_count_what_one_counts(runs, tmp_path):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.token_histograms_run", str(tmp_path / "ddp"), "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for point in POINTS:
        one, two = load_point(runs / "sft", point), load_point(tmp_path / "ddp", point)
        np.testing.assert_array_equal(one.paper_counts, two.paper_counts)
        np.testing.assert_array_equal(one.fine_counts, two.fine_counts)
        for key, value in one.summary.items():
            assert two.summary[key] == pytest.approx(value, rel=1e-6), (point, key)
    one, two = _lowest_table(runs / "sft"), _lowest_table(tmp_path / "ddp")
    assert one.keys() == two.keys()
    for token, (n, p) in one.items():
        assert two[token][0] == n and two[token][1] == pytest.approx(p, rel=1e-6)
