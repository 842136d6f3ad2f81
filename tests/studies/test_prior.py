"""The prior-strength report: arms by the base's steps, cells and the paired gap computed
independently, bases told apart by their recipe, runs of another recipe refused."""

import statistics

import pytest

from dftlab.evaluation.stats import newcombe, wilson
from dftlab.reporting.prior import main
from tests.studies.conftest import fake_run

WEAK, STRONG = ["trainer.max_steps=200"], ["trainer.max_steps=3200"]


@pytest.fixture
def runs(tmp_path):
    """Two directories, as the studies leave them: the default arm, and the weak and strong ones."""
    default, other = tmp_path / "temperature", tmp_path / "prior"
    for seed, (s, d) in enumerate(((0.5, 0.4), (0.7, 0.6))):
        fake_run(default, f"{seed}_sft", "sft", seed, (s, 0.3, 0.3), (0.3, 0.2, 0.2), base=(0.2, 0.1, 0.1))
        fake_run(default, f"{seed}_dft", "dft", seed, (d, 0.4, 0.2), (0.4, 0.3, 0.3), base=(0.2, 0.1, 0.1))
        fake_run(default, f"{seed}_focal", "focal", seed, (0.9, 0.9, 0.9), (0.9, 0.9, 0.9))  # not compared
        for overrides, acc in ((WEAK, 0.1), (STRONG, 0.8)):
            steps = overrides[0].split("=")[1]
            fake_run(other, f"{steps}_{seed}_sft", "sft", seed, (acc, acc, acc), (acc, acc, acc), overrides=overrides)
            fake_run(
                other,
                f"{steps}_{seed}_dft",
                "dft",
                seed,
                (acc + 0.1 * seed, acc, acc),
                (acc, acc, acc),
                overrides=overrides,
            )
    return default, other


def _table(text: str, index: int) -> list[str]:
    return [line for line in text.split("### ")[index].splitlines() if line.startswith("| ")]


def test_rows_cells_and_gaps(runs, tmp_path, capsys):
    out = tmp_path / "report" / "prior"
    main([*map(str, runs), "--out", str(out)])
    text = out.with_suffix(".md").read_text()
    assert capsys.readouterr().out == text
    greedy = _table(text, 1)
    assert greedy[0] == "| base steps | | in distribution | unseen rules |"
    assert [line.split(" | ")[:2] for line in greedy[1:]] == [
        [f"| {steps}", who]
        for steps in (200, 800, 3200)
        for who in ("base", "sft (2 seeds)", "dft (2 seeds)", "**dft − sft**")
    ]
    # 800 steps, in distribution: sft 0.5 and 0.7 of 10 problems, dft 0.4 and 0.6: the gap -0.1 on each seed
    lo, hi = wilson(12, 20)
    sft = next(line for line in greedy if line.startswith("| 800 | sft"))
    assert sft.split(" | ")[2] == f"60.0 ± 14.1 [{100 * lo:.1f}, {100 * hi:.1f}]"
    gap = next(line for line in greedy if line.startswith("| 800 | **dft"))
    lo, hi = newcombe(10, 20, 12, 20)
    assert gap.split(" | ")[2] == f"-10.0 ± 0.0 [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    # unseen rules, 800 steps: per seed the mean over all5 and all7; dft (0.4, 0.2) vs sft (0.3, 0.3): no gap
    hits_dft, hits_sft = (4 + 2) * 2, (3 + 3) * 2
    lo, hi = newcombe(hits_dft, 40, hits_sft, 40)
    assert gap.split(" | ")[3] == f"+0.0 ± 0.0 [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
    # 200 steps: dft - sft is 0 on seed 0 and 0.1 on seed 1
    gap200 = next(line for line in greedy if line.startswith("| 200 | **dft"))
    assert gap200.split(" | ")[2].startswith(f"+5.0 ± {100 * statistics.stdev([0, 0.1]):.1f} [")
    # the base: one measurement shared by the fine-tunes of one base
    assert next(line for line in greedy if line.startswith("| 800 | base")).split(" | ")[2].startswith("20.0 [")
    assert "Average@4 at temperature 1, top_p 1" in text.split("### ")[2]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report" / "prior.csv").read_text().count(
        "\n"
    ) == 1 + 2 * 3 * 4 * 2  # modes x arms x rows x columns


def test_bases_are_told_apart_by_their_recipe_not_their_steps(tmp_path):
    fake_run(tmp_path, "a", "sft", 0, (0.5,) * 3, (0.5,) * 3)
    fake_run(tmp_path, "b", "dft", 0, (0.5,) * 3, (0.5,) * 3, overrides=["data=game24_frozen"])  # 800 steps too
    with pytest.raises(SystemExit, match="two bases of 800 steps"):
        main([str(tmp_path), "--out", str(tmp_path / "x")])


def test_runs_of_another_recipe_are_refused(tmp_path):
    fake_run(tmp_path, "a", "sft", 0, (0.5,) * 3, (0.5,) * 3, optim={"lr": 1e-3})
    fake_run(tmp_path, "b", "dft", 0, (0.5,) * 3, (0.5,) * 3, optim={"lr": 3e-3})
    with pytest.raises(SystemExit, match=r"differ in optim.lr \(0.001 vs 0.003\)"):
        main([str(tmp_path), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no run of iw_sft under"):
        main([str(tmp_path), "--losses", "sft", "iw_sft", "--out", str(tmp_path / "x")])
