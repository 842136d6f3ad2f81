"""The prompt-diversity report: arms by the training rules, the unseen-rule cells and gaps computed
independently, the arms' optimizer steps stated."""

import pytest

from dftlab.evaluation.stats import newcombe, wilson
from dftlab.reporting.diversity import main
from tests.studies.conftest import fake_run

FROZEN = ["J=10,Q=10,K=10"]


def test_unseen_rule_cells_and_gaps(tmp_path):
    diverse, frozen = tmp_path / "temperature", tmp_path / "frozen"
    for seed in (0, 1):
        fake_run(diverse, f"{seed}_sft", "sft", seed, (0.6, 0.5, 0.3), (0.4, 0.3, 0.1))
        fake_run(diverse, f"{seed}_dft", "dft", seed, (0.5, 0.4, 0.4 + 0.1 * seed), (0.5, 0.4, 0.3))
        fake_run(
            frozen,
            f"{seed}_sft",
            "sft",
            seed,
            (0.9, 0.0, 0.1),
            (0.8, 0.0, 0.0),
            base=(0.5, 0.0, 0.0),
            rules=FROZEN,
            overrides=["data=game24_frozen"],
            trainer={"max_steps": 250},
        )
        fake_run(
            frozen,
            f"{seed}_dft",
            "dft",
            seed,
            (0.9, 0.1, 0.1),
            (0.9, 0.0, 0.1),
            base=(0.5, 0.0, 0.0),
            rules=FROZEN,
            overrides=["data=game24_frozen"],
            trainer={"max_steps": 250},
        )
    out = tmp_path / "diversity"
    main([str(diverse), str(frozen), "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    greedy = [line for line in text.split("### ")[1].splitlines() if line.startswith("| ")]
    assert greedy[0] == "| training rules | | all5 | all7 | mean |"  # test_id is not a column
    assert [line.split(" | ")[:2] for line in greedy[1:]] == [
        [f"| {arm}", who]
        for arm in ("1 rule", "2 rules")
        for who in ("base", "sft (2 seeds)", "dft (2 seeds)", "**dft − sft**")
    ]
    rows = {tuple(line.split(" | ")[:2]): line.split(" | ")[2:] for line in greedy[1:]}
    # 2 rules, all7: sft 0.3 on both seeds, dft 0.4 and 0.5: the gap 0.1 and 0.2
    lo, hi = newcombe(9, 20, 6, 20)
    assert rows[("| 2 rules", "**dft − sft**")][1] == f"+15.0 ± 7.1 [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    # 1 rule, the mean of all5 and all7 for dft: 0.1 per seed, 4 of 40 pooled
    lo, hi = wilson(4, 40)
    assert rows[("| 1 rule", "dft (2 seeds)")][2] == f"10.0 ± 0.0 [{100 * lo:.1f}, {100 * hi:.1f}] |"
    assert "optimizer steps of the fine-tunes: 1 rule: 250; 2 rules: 250" in text
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_two_rule_sets_of_one_size_are_refused(tmp_path):
    fake_run(tmp_path, "a", "sft", 0, (0.5,) * 3, (0.5,) * 3, rules=FROZEN)
    fake_run(tmp_path, "b", "dft", 0, (0.5,) * 3, (0.5,) * 3, rules=["J=8,Q=9,K=10"])
    with pytest.raises(SystemExit, match="two sets of training rules of one size"):
        main([str(tmp_path), "--out", str(tmp_path / "x")])
