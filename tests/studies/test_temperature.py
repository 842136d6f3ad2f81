"""Accuracy against the decoding temperature: the table from the written records, the cache, the
run's own evaluation reused exactly, the entropy and the tuned temperature computed independently."""

import csv
import json
import shutil
import statistics

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dftlab.config import compose_config, instantiate
from dftlab.evaluation.stats import wilson
from dftlab.reporting import study, temperature
from dftlab.reporting.runs import find_runs
from dftlab.reporting.temperature import CACHE, Decoding, Options, RunMeasures, main

ARGS = ["--k", "2", "--temperatures", "0", "0.5", "1", "--top-p", "1", "0.9", "--tune-grid", "0.5", "1"]


@pytest.fixture(scope="module")
def report(tiny_multirun, tmp_path_factory, verdicts_by_hash):
    runs = (
        tmp_path_factory.mktemp("temperature") / "multirun"
    )  # the cache goes into the runs: keep the shared ones clean
    shutil.copytree(tiny_multirun, runs)
    out = tmp_path_factory.mktemp("report") / "temperature"
    main([str(runs), *ARGS, "--out", str(out)])
    return runs, out


def _records(run_dir, d: Decoding, part="test"):
    """Every written record of a setting: from the cache, or the run's own evaluation."""
    found = list((run_dir / CACHE).glob(f"{d.tag}-{part}-*"))
    if found:
        (folder,) = found
    else:
        folder = run_dir / "eval" / ("" if d.greedy else "sampled")
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in folder.glob("*.jsonl")}


def _acc(records):
    return statistics.fmean(statistics.fmean(s["correct"] for s in r["scores"]) for r in records)


def test_every_cell_is_the_mean_of_the_written_verdicts(report):
    runs, out = report
    with open(study.with_suffix(out, "_runs.csv"), newline="") as f:
        table = {(r["row"], int(r["seed"]), r["decoding"], r["split"]): r for r in csv.DictReader(f)}
    settings = temperature.grid_of([0, 0.5, 1], [1, 0.9], 2)
    assert [d.tag for d in settings] == ["greedy", "t0.5_p1_k2", "t1_p1_k2", "t0.5_p0.9_k2", "t1_p0.9_k2"]
    assert len(table) == 3 * len(settings) * 4  # runs x settings x splits
    for run in find_runs(runs):
        for d in settings:
            records = _records(run.path, d)
            assert set(records) == {"test_id", "test_ood_rule_all5", "test_ood_rule_all7", "test_ood_rule_faces11_13"}
            for split, recs in records.items():
                assert all(len(r["scores"]) == d.k for r in recs)
                row = table[(run.get("run_name"), run.get("seed"), d.tag, split)]
                assert float(row["acc"]) == pytest.approx(_acc(recs)) and int(row["n"]) == len(recs) == 4
    # a cell of the markdown: sft (two seeds) at T 0.5 in distribution, its mean, spread and pooled interval
    per_seed = [_acc(_records(r.path, settings[1])["test_id"]) for r in find_runs(runs) if r.get("run_name") == "sft"]
    hits = sum(a * 4 * 2 for a in per_seed)
    lo, hi = wilson(hits, 16)
    mean, std = 100 * statistics.fmean(per_seed), 100 * statistics.stdev(per_seed)
    cell = f"{mean:.1f} ± {std:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    text = study.with_suffix(out, ".md").read_text()
    sft_line = next(line for line in text.split("### ")[1].splitlines() if line.startswith("| sft (2 seeds)"))
    assert sft_line.split(" | ")[3] == cell
    assert study.with_suffix(out, ".png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_report_generates_nothing(report, monkeypatch, capsys):
    runs, out = report
    before = study.with_suffix(out, ".md").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("generated or loaded a model although everything is cached")

    monkeypatch.setattr(temperature, "generate_and_score", fail)
    monkeypatch.setattr(temperature, "load_for_generation", fail)
    main([str(runs), *ARGS, "--out", str(out)])
    assert study.with_suffix(out, ".md").read_text() == before
    assert "0 measurements made" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_measured_side_by_side_by_worker_processes(tiny_multirun, tmp_path, monkeypatch, capsys):
    """--jobs 2: the workers fill the runs' caches, and the report then reads them (the main process
    generates nothing). The workers score with the real verifier: none of the stand-in's patches."""
    runs = tmp_path / "multirun"
    shutil.copytree(tiny_multirun, runs)

    def fail(*args, **kwargs):
        raise AssertionError("the main process generated")

    monkeypatch.setattr(temperature, "generate_and_score", fail)
    main([str(runs), *ARGS, "--jobs", "2", "--out", str(tmp_path / "t")])
    # per run 3 settings and the entropy (greedy and Average@2 at T 1 are its own); per sft run 2 on validation
    assert "16 measurements made" in capsys.readouterr().err
    assert len(list(runs.glob("*/decoding/t0.5_p0.9_k2-test-*/summary.json"))) == 3


def test_the_runs_own_evaluation_is_what_generating_again_gives(tiny_multirun, monkeypatch, verdicts_by_hash):
    """Greedy and the run's own Average@2 are read from its end-of-run evaluation: exactly what the
    same settings generate again."""
    run = next(r for r in find_runs(tiny_multirun) if r.get("run_name") == "dft")
    m = RunMeasures(run, Options())
    own = {d: m.accuracy(d) for d in (Decoding.make(0, 1, 1), Decoding.make(1.0, 1.0, 2))}
    assert m.computed == 0 and not (run.path / CACHE).exists()
    monkeypatch.setattr(RunMeasures, "_own_rows", lambda self, d: None)
    for d, rows in own.items():
        assert m.accuracy(d) == rows
    assert m.computed == 2
    shutil.rmtree(run.path / CACHE)


def test_entropy_along_the_reference_solutions(report):
    runs, _ = report
    run = next(r for r in find_runs(runs) if r.get("run_name") == "dft")
    (folder,) = (run.path / CACHE).glob("entropy-test-*")
    got = json.loads((folder / "summary.json").read_text())["splits"]["test_id"]
    lm = AutoModelForCausalLM.from_pretrained(run.path / "export").eval()
    tok = AutoTokenizer.from_pretrained(run.path / "export")
    task = instantiate(compose_config(["data.task.n_test=4", "data.task.ood_n_cards=null"]).data.task)
    total, count = 0.0, 0
    for p in task.test_splits["test_id"]:
        prompt = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        response = tok(p["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([prompt + response])).logits[0].double()
        # the positions that predict the response's tokens: the last prompt token's onwards
        logp = logits[len(prompt) - 1 : -1].log_softmax(-1)
        total += float(-(logp.exp() * logp).sum())
        count += len(response)
    assert got["tokens"] == count and got["nats"] == pytest.approx(total / count, rel=1e-5)


def test_the_tuned_temperature_is_the_best_on_validation(report):
    runs, out = report
    text = study.with_suffix(out, ".md").read_text()
    tuned = text.split("### sft with its temperature tuned")[1]
    for run in (r for r in find_runs(runs) if r.get("run_name") == "sft"):
        val = {t: _acc(_records(run.path, Decoding.make(t, 1, 2), "val")["val"]) for t in (0.5, 1.0)}
        assert all(len(_records(run.path, Decoding.make(t, 1, 2), "val")["val"]) == 16 for t in val)
        best = max(val, key=lambda t: (val[t], -t))
        assert f"| {run.get('seed')} | {best:g} | {100 * val[best]:.1f} |" in tuned


def test_bad_requests_are_refused(tiny_multirun, tmp_path):
    with pytest.raises(SystemExit, match="--tune focal: no such run_name"):
        main([str(tiny_multirun), *ARGS, "--tune", "focal", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no such directory"):
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
