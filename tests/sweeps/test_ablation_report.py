"""The Figure 3 analogue from finished runs: pooled ablations, seeds, splits, and W&B runs (a stand-in
for `wandb.Api`, which needs a server)."""

import csv
import json
from types import SimpleNamespace

import pytest
import yaml

from dftlab.evaluation.report import HEADLINE
from dftlab.reporting.ablation import from_wandb, local_results, main, panels

SPLITS = ("test_id", "test_ood_cards")


def split_row(acc):
    return {"n": 400, "acc": acc, "ci95": [acc - 0.05, acc + 0.05], "well_formed": 1.0}


def write_run(root, name, loss, lr, batch, seed, accs, base=(0.2, 0.1), finished=True):
    path = root / name
    path.mkdir(parents=True)
    config = {"loss": {"name": loss}, "optim": {"lr": lr}, "data": {"batch_size": batch}, "seed": seed}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "csv").mkdir()  # a run writes its metrics from the start, its summary at the end
    if finished:
        summary = {"steps": 8000 // batch, "eval": {
            "finetuned": {s: split_row(a) for s, a in zip(SPLITS, accs)},
            "base": {s: split_row(a) for s, a in zip(SPLITS, base)},
            HEADLINE: sum(accs) / len(accs),
        }}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def pooled(tmp_path):
    """An lr sweep at batch 32 (two seeds) and a batch sweep at lr 1e-3 (one seed), SFT and DFT."""
    lr_dir, bs_dir = tmp_path / "lr", tmp_path / "bs"
    for loss, gain in (("sft", 0.2), ("dft", 0.1)):
        for lr in (4e-3, 1e-3, 2e-4):
            for seed in (0, 1):
                acc = 0.3 + gain + 0.01 * seed + (lr == 1e-3) * 0.05
                write_run(lr_dir, f"{loss}_lr{lr}_seed{seed}", loss, lr, 32, seed, (acc, acc - 0.1))
        for batch in (16, 32, 64):
            write_run(bs_dir, f"{loss}_bs{batch}", loss, 1e-3, batch, 0, (0.4 + gain, 0.3 + gain))
    write_run(lr_dir, "crashed", "sft", 1e-3, 32, 5, (0.0, 0.0), finished=False)
    return lr_dir, bs_dir


def test_one_panel_per_ablation_with_the_other_axis_held(pooled):
    results, skipped = local_results(list(pooled), None)
    assert len(results) == 18 and skipped == [f"{pooled[0] / 'crashed'}: not finished (no summary.json)"]
    lr, bs = panels(results)
    assert (lr.axis.key, lr.fixed) == ("lr", "global batch size 32")
    assert (bs.axis.key, bs.fixed) == ("batch_size", "learning rate 0.001")
    assert list(lr.series) == ["dft", "sft"] and [p.x for p in lr.series["sft"]] == [2e-4, 1e-3, 4e-3]
    # at lr 1e-3, batch 32: the lr sweep's two seeds, and the batch sweep's run of seed 0 (averaged with its twin)
    point = lr.series["sft"][1]
    assert point.accs == pytest.approx([(0.50 + 0.55) / 2, 0.51])
    assert [p.x for p in bs.series["dft"]] == [16, 32, 64]
    assert lr.base == pytest.approx(0.15)


def test_outputs(pooled, tmp_path):
    out = tmp_path / "report" / "fig3.v1"
    main([*map(str, pooled), "--out", str(out)])
    png = tmp_path / "report" / "fig3.v1.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    with open(tmp_path / "report" / "fig3.v1.csv") as f:
        points = list(csv.DictReader(f))
    assert len(points) == 2 * 3 + 2 * 3
    spread = next(p for p in points if p["axis"] == "lr" and p["loss"] == "sft" and float(p["x"]) == 4e-3)
    assert spread["n"] == "2" and float(spread["min"]) < float(spread["max"])
    table = (tmp_path / "report" / "fig3.v1.md").read_text()
    assert "| learning rate | dft | sft |" in table and "(n=2)" in table and "Starting model: 15.0." in table


def test_one_split(pooled, tmp_path):
    results, _ = local_results([pooled[1]], "test_ood_cards")
    assert [r.acc for r in results if r.loss == "sft"] == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(SystemExit):
        main([str(pooled[1]), "--out", str(tmp_path / "x"), "--split", "test_nope"])


def test_nothing_to_compare(tmp_path, capsys):
    for argv in (["--out", str(tmp_path / "x")], [str(tmp_path), "--group", "lr", "--out", str(tmp_path / "x")]):
        with pytest.raises(SystemExit):
            main(argv)
    write_run(tmp_path / "runs", "a", "sft", 1e-3, 32, 0, (0.5, 0.4))
    write_run(tmp_path / "runs", "b", "dft", 1e-3, 32, 0, (0.4, 0.4))
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x.png").exists() and "| a | sft | 0.001 | 32 | 0 | 250 | 45.0 |" in capsys.readouterr().out


def wandb_run(run_id, config, summary, name="r"):
    return SimpleNamespace(path=["me", "dftlab", run_id], name=name, config=config, summary=summary)


def test_wandb_runs_from_a_sweep_and_from_a_logged_config():
    swept = {"loss": "dft", "optim.lr": 1e-4, "hparams_search": "lr", "logger": "wandb"}  # only the sweep's keys
    logged = {"loss.name": "sft", "optim.lr": 1e-4, "data.batch_size": 256, "seed": 1}
    summary = {HEADLINE: 0.4, "test_id/acc": 0.5, "base/test_id/acc": 0.3, "base/test_ood_cards/acc": 0.1,
               "val/acc": 0.9, "trainer/global_step": 390}
    assert from_wandb(wandb_run("a", {**swept, "data.batch_size": 256}, summary), None).loss == "dft"
    r = from_wandb(wandb_run("b", logged, summary), None)
    assert (r.run, r.loss, r.lr, r.batch_size, r.seed, r.steps, r.acc) == ("me/dftlab/b", "sft", 1e-4, 256, 1, 390, 0.4)
    assert r.base_acc == pytest.approx(0.2)  # the mean over the base's test splits only
    assert from_wandb(wandb_run("b", logged, summary), "test_id").base_acc == 0.3
    assert from_wandb(wandb_run("c", swept, summary), None) is None  # no batch size: not placeable
    assert from_wandb(wandb_run("d", logged, {}), None) is None  # crashed before the evaluation


def test_wandb_command_line(monkeypatch, tmp_path, capsys):
    runs = [
        wandb_run(f"{loss}{lr}", {"loss.name": loss, "optim.lr": lr, "data.batch_size": 32, "seed": 0},
                  {HEADLINE: acc}, name=f"{loss}_lr{lr}")
        for loss, lr, acc in (("sft", 1e-4, 0.3), ("sft", 5e-5, 0.35), ("dft", 1e-4, 0.4), ("dft", 5e-5, 0.45))
    ]
    queries = []

    class Api:
        def runs(self, path, filters):
            queries.append((path, filters))
            return runs if filters.get("group") == "lr" else []

    monkeypatch.setattr("wandb.Api", Api)
    main(["--wandb", "me/dftlab", "--group", "lr", "--group", "batch_size", "--out", str(tmp_path / "w")])
    assert queries == [("me/dftlab", {"state": "finished", "group": "lr"}),
                       ("me/dftlab", {"state": "finished", "group": "batch_size"})]
    assert (tmp_path / "w.png").exists()
    assert "| 5e-05 | 45.0 | 35.0 |" in capsys.readouterr().out


def test_the_config_a_run_gives_wandb_is_what_the_reader_needs(tmp_path):
    from dftlab.loggers import flat_config
    from tests.conftest import fast_cfg

    cfg = fast_cfg(tmp_path, "logger=wandb", "loss=dft", "optim.lr=3e-4", "seed=2")
    config = flat_config(cfg)
    assert config["logger.wandb.name"] == cfg.run_name and not any(isinstance(v, dict) and v for v in config.values())
    r = from_wandb(wandb_run("x", config, {HEADLINE: 0.5}), None)
    assert (r.loss, r.lr, r.batch_size, r.seed) == ("dft", 3e-4, cfg.data.batch_size, 2)
