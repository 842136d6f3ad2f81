"""The 24-card game drawn as an image: seeded images, the same verifier and splits, and the whole run."""

import numpy as np
import pytest
from PIL import Image

from dftlab.vision.cards import PANEL, draw_cards, image_size
from tests.conftest import fast_cfg
from tests.vision.conftest import card_rows

VISION = ["experiment=game24_vision", "debug=tiny_vision"]


def test_images_are_seeded_one_card_per_panel():
    a, b = draw_cards(["A", "7", "K", "3"], "k"), draw_cards(["A", "7", "K", "3"], "k")
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(draw_cards(["A", "7", "K", "3"], "other")))
    five = np.asarray(draw_cards(["A", "2", "3", "4", "5"], "k")).astype(int)
    assert five.shape == (2 * PANEL, 3 * PANEL, 3) and image_size(5) == (3 * PANEL, 2 * PANEL)
    # a card's face is light, the table dark: five of the six panels hold a card
    faces = [five[r * PANEL + 5 : r * PANEL + 9, c * PANEL + 3 : c * PANEL + 6].mean() > 150
             for r in range(2) for c in range(3)]
    assert sum(faces) == 5


def test_rows_hold_the_image_and_the_rule_and_the_verifier_reads_the_problem(tmp_path):
    task, rows = card_rows(tmp_path)
    row = rows[0]
    image = row["messages"][0]["content"][0]["image"]
    assert Image.open(image).size == tuple(row["image_sizes"][0])
    rule, cards, target = row["problem"].rstrip(":").split("|")
    assert row["messages"][0]["content"][1]["text"] == f"{rule}|{target}:"  # the cards are in the image only
    assert task.score(row, row["messages"][1]["content"]) == {"correct": True, "well_formed": True}
    assert task.score(row, "1+1=2") == {"correct": False, "well_formed": False}
    assert set(task.test_splits) == {"test_id", "test_ood_rule_all5", "test_ood_cards"}
    assert image_size(5) == tuple(task.test_splits["test_ood_cards"][0]["image_sizes"][0])


def _run(run_dir, *overrides):
    from dftlab.cli import train

    return train(fast_cfg(run_dir, *VISION, *overrides, fast=False))


def test_the_visual_task_trains_exports_and_evaluates(run_dir):
    summary = _run(run_dir, "loss=dft")
    assert summary["steps"] == 2 and set(summary["eval"]["finetuned"]) == {
        "test_id", "test_ood_rule_all5", "test_ood_rule_all7", "test_ood_rule_faces11_13", "test_ood_cards"}
    assert (run_dir / "export" / "preprocessor_config.json").is_file()
    assert (run_dir / "token_probs" / "before.csv").is_file() and (run_dir / "eval" / "test_id.jsonl").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sft", "dft", "focal", "iw_sft", "asft", "mixce", "prob_power", "eaft", "anti_dft"])
def test_every_loss_runs_the_visual_task(run_dir, loss):
    assert _run(run_dir, f"loss={loss}")["steps"] == 2


@pytest.mark.slow
def test_the_embedded_visual_base_is_built_by_nll_then_fine_tuned(run_dir):
    """experiment=game24_vision as a user runs it, shrunk: the base (a Qwen2-VL) is built first, then tuned."""
    base = ["model=vl_scratch", "data=game24_vision", "data.task.n_train=32", "data.batch_size=16",
            "trainer.max_steps=2", "model.arch.text_config.num_hidden_layers=1", "model.arch.vision_config.depth=1"]
    base = "[" + ",".join(f"'{o}'" for o in base) + "]"
    summary = _run(run_dir, "model=vl_base", f"model.base_overrides={base}", "eval.max_problems=2",
                   "callbacks.eval_during_training.max_problems=2")
    assert summary["steps"] == 2 and summary["eval"]["base"]  # the base evaluated beside the fine-tune
    import json

    assert json.loads((run_dir / "export" / "config.json").read_text())["model_type"] == "qwen2_vl"
