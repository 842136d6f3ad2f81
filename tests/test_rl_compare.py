"""The RL comparison end to end on tiny settings: the documented multirun (SFT, DFT, RFT, DFT on
the rejection samples, DPO, GRPO), shrunk to one seed of tiny runs, then the report."""

import os
import subprocess
import sys

import pytest

from dftlab.data.tokenizer import char_tokenizer
from dftlab.reporting.rl_compare import main
from tests.conftest import FAST, ROOT, tiny_lm

METHODS = ["sft", "dft", "rft", "dft_rs", "dpo", "grpo"]


@pytest.mark.slow
def test_the_rl_comparison_command(tmp_path):
    tok = char_tokenizer()
    model = tmp_path / "base"
    tiny_lm(vocab=len(tok)).save_pretrained(model)
    tok.save_pretrained(model)
    # the rejection samples from the same tiny base; a coin for a verifier, so that a random model has pairs
    generate = (f"++rejection_sampling=['model=hf','model.name_or_path={model}','data.task.n_train=64',"
                f"'grader={{_target_: tests.helpers.rl.CoinGrader}}']")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=" + ",".join(f"rl_{m}" for m in METHODS), "seed=0", *FAST,
         f"model.name_or_path={model}", generate, "++eval.samples.n=2", "callbacks.token_histograms.n_examples=16",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "cache").glob("samples-*/counts.json"))) == 1  # sampled once, for three methods
    main([str(tmp_path / "multirun"), "--out", str(tmp_path / "rl")])
    table2 = (tmp_path / "rl_table2.md").read_text()
    for row in ["| base |", *(f"| {m} (1 seed) |" for m in METHODS)]:
        assert row in table2, row
    assert "Rejection samples (the base, 4 per training prompt" in table2
    hist = (tmp_path / "rl_token_probs.md").read_text()
    assert all(f"| {m} |" in hist for m in ["base", *METHODS])
    assert (tmp_path / "rl_token_probs.png").stat().st_size > 1000
    assert "### Average@2 (%)" in (tmp_path / "rl.md").read_text()
