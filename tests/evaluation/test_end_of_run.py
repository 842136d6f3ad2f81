"""The end-of-run evaluation with Average@k: in summary.json, in every logger, in the printed table,
and per problem on disk; bad sampling settings fail before training."""

import json

import pytest

from dftlab.config import compose_config, validate
from dftlab.errors import ConfigError
from dftlab.reporting.runs import load_run
from dftlab.run import run
from tests.conftest import fast_cfg


def test_average_at_k_beside_greedy(run_dir, capsys):
    summary = run(fast_cfg(run_dir, "eval.samples={n: 3, temperature: 0.7}", "~callbacks.eval_during_training"))
    ev = summary["eval"]
    assert (ev["sampled"]["k"], ev["sampled"]["temperature"], ev["sampled"]["top_p"]) == (3, 0.7, 1.0)
    assert set(ev["sampled"]["finetuned"]) == set(ev["finetuned"])
    for row in ev["sampled"]["finetuned"].values():
        assert row["n"] == 4 and 0 <= row["acc"] <= row["pass"] <= 1
    assert json.loads((run_dir / "summary.json").read_text())["eval"] == ev
    header = set().union(*load_run(run_dir).metrics())
    assert {"test_id/acc", "test_id/avg@3", "test_id/pass@3", "test/mean_acc", "test/mean_avg@3"} <= header
    printed = capsys.readouterr().out
    assert "greedy accuracy (%)" in printed and "Average@3 (%), temperature 0.7, top_p 1" in printed
    records = [json.loads(line) for line in (run_dir / "eval" / "sampled" / "test_id.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(r["completions"]) == len(r["scores"]) == 3 for r in records)


@pytest.mark.parametrize(
    ("override", "message"),
    [("eval.samples={n: 0}", "eval.samples.n=0"), ("eval.samples={n: 8, top_p: 0}", "eval.samples.top_p=0.0"),
     ("eval.samples={n: 8, k: 3}", r"eval.samples has unknown keys \['k'\]"),
     ("eval.backend=gpu", "eval.backend='gpu'")],
)
def test_bad_sampling_settings_fail_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([override]))
