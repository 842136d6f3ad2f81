"""Prompt diversity: fine-tunes (and bases) trained on one stated rule ("frozen prompt") against
those trained on many, SFT against DFT, on the rules no run was trained on.

    python train.py -m experiment=study_frozen          # SFT and DFT on one rule, from its own base
    python -m dftlab.reporting.diversity logs/studies/temperature logs/studies/frozen --out docs/figures/diversity

Runs are grouped by their training rules (`data.task.train_rules`), labelled by how many there are;
they must share everything else but the loss, the seed, the base and the length of training (the
note under the tables gives each arm's optimizer steps). The unseen-rule splits hold the
same problems for every group (a split's problems depend on its rule, not on the training rules).
Writes `<out>.md` (and prints it), `<out>.csv` and `<out>.png` (accuracy against the number of
training rules, a panel per unseen rule and their mean, a row per decoding).
"""

from __future__ import annotations

from pathlib import Path

from dftlab.reporting import study
from dftlab.reporting.runs import Run

# what the arms differ in, besides the loss and the seed: the one-rule arm trains for a number of
# steps, where its data would give it far fewer epochs' worth
ALLOWED = ("data.task.train_rules", "model.base_overrides", "trainer.max_steps", "trainer.max_epochs")


def arms(runs: list[Run]) -> list[study.Arm]:
    """One arm per set of training rules, fewest first."""
    grouped: dict[tuple, list[Run]] = {}
    for r in runs:
        grouped.setdefault(tuple(r.get("data.task.train_rules") or ()), []).append(r)
    counts = [len(rules) for rules in grouped]
    if len(set(counts)) < len(counts):
        raise SystemExit(f"two sets of training rules of one size ({sorted(counts)}): give one set per size")
    return [
        study.Arm(len(rules), f"{len(rules)} rule{'s' if len(rules) != 1 else ''}", grouped[rules])
        for rules in sorted(grouped, key=len)
    ]


def write(paths: list[Path], out: Path, losses: tuple[str, str]) -> str:
    runs = study.load_study(paths, losses, ALLOWED)
    arm_list = arms(runs)
    unseen = study.groups(study.rows(runs[0], "greedy")).get(study.OOD)
    if not unseen:
        raise SystemExit(f"{runs[0].path}: no unseen-rule split ({study.OOD_PREFIX}*) was evaluated")
    columns = {**{s.removeprefix(study.OOD_PREFIX): [s] for s in unseen}, "mean": unseen}
    steps = "; ".join(
        f"{arm.name}: {', '.join(str(n) for n in sorted({r.summary.get('steps') for r in arm.runs}))}"
        for arm in arm_list
    )
    text = study.write_tables(
        arm_list,
        runs,
        losses,
        columns,
        out,
        "training rules",
        "on the unseen rules",
        f"; `mean`: over the unseen rules; optimizer steps of the fine-tunes: {steps}",
    )
    from dftlab.reporting.study_plot import plot_grid

    grid = [study.accuracy_panels(arm_list, runs, losses, columns, mode) for mode in study.modes(runs)]
    plot_grid(
        grid,
        study.with_suffix(out, ".png"),
        "Unseen rules after training on one or many stated rules (bands: lowest to highest seed)",
        "rules stated in the training prompts",
        [arm.x for arm in arm_list],
        log_base=2,
    )
    return text


def main(argv: list[str] | None = None) -> None:
    study.cli("python -m dftlab.reporting.diversity", __doc__, "diversity", write, argv)


if __name__ == "__main__":
    main()
