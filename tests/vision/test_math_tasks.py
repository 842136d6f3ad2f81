"""MathVerse, MathVision and WeMath from local stand-ins with their fields: prompts with the image, letters for
multiple choice then the math grader, generation through the shared evaluation code, and the Table 4 recipe."""

import json

import pytest
from PIL import Image

from dftlab.config import compose_config
from dftlab.vision.math_tasks import VisionMathTask, choice_letter, options_of


def _stand_ins(root):
    Image.new("RGB", (56, 56), (10, 200, 10)).save(root / "fig.png")
    rows = {
        "mathverse": [{"sample_index": "1", "question": "Which is green? Choices: A. it B. no", "image": "fig.png",
                       "answer": "A", "question_type": "multi-choice"},
                      {"sample_index": "2", "question": "Half of one?", "image": "fig.png", "answer": "\\frac{1}{2}",
                       "question_type": "free-form"}],
        "mathvision": [{"id": "7", "question": "How many?", "options": ["3", "4", "5"], "image": "fig.png",
                        "answer": "B"}],
        "wemath": [{"ID": "w1", "question": "Area?", "option": "A. 3; B. 4; C. 5", "image_path": "fig.png",
                    "answer": "C"}],
    }
    for name, rs in rows.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return {name: str(root / f"{name}.jsonl") for name in rows}


def test_rows_hold_the_image_and_the_choices(tmp_path):
    task = VisionMathTask(paths=_stand_ins(tmp_path))
    splits = task.test_splits
    assert {k: len(v) for k, v in splits.items()} == {"mathverse": 2, "mathvision": 1, "wemath": 1}
    row = splits["mathvision"][0]
    image, text = row["prompt"][0]["content"]
    assert image == {"type": "image", "image": str(tmp_path / "fig.png")} and "(B) 4" in text["text"]
    assert row["options"] == {"A": "3", "B": "4", "C": "5"} and splits["mathverse"][1]["options"] is None
    assert options_of("A. 3; B. 4; C. 5") == {"A": "3", "B": "4", "C": "5"}


def test_letters_for_multiple_choice_then_the_math_grader(tmp_path):
    task = VisionMathTask(paths=_stand_ins(tmp_path))
    verse, vision, wemath = (task.test_splits[k] for k in ("mathverse", "mathvision", "wemath"))
    opts = vision[0]["options"]
    assert choice_letter("so \\boxed{B}", opts) == "B" and choice_letter("\\boxed{(C) 5}", opts) == "C"
    assert choice_letter("\\boxed{4}", opts) == "B"  # the text of an option
    assert choice_letter("\\boxed{7}", opts) is None
    rows = [vision[0], vision[0], wemath[0], verse[1], verse[1], verse[0]]
    completions = ["\\boxed{B}", "\\boxed{A}", "the answer is C", "\\boxed{0.5}", "\\boxed{2}", "\\boxed{A}"]
    assert [s["correct"] for s in task.score_many(rows, completions)] == [True, False, True, True, False, True]


def test_image_questions_go_through_the_shared_evaluation(tiny_vlm, tmp_path):
    from dftlab.evaluation.runner import evaluate

    _, tokenizer, lm = tiny_vlm
    task = VisionMathTask(paths=_stand_ins(tmp_path), max_new_tokens=4)
    results = evaluate(lm, tokenizer, task, n_samples=2, temperature=1.0, batch_size=4)
    assert {k: r.n for k, r in results.items()} == {"mathverse": 2, "mathvision": 1, "wemath": 1}
    assert all(len(rec["completions"]) == 2 for r in results.values() for rec in r.records)


def test_the_table_4_recipe_composes_as_the_paper_says():
    cfg = compose_config(["experiment=qwen2.5-vl-3b_wethink"])
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct" and cfg.optim.lr == 5e-5
    assert cfg.trainer.max_epochs == 1 and cfg.loss.name == "dft"
    assert list(cfg.data.task.eval_task.sets) == ["mathverse", "mathvision", "wemath"]
    assert cfg.trainer.strategy._target_.endswith("FSDP2Strategy")


@pytest.mark.parametrize("loss", ["sft", "dft"])
def test_the_table_4_recipe_runs_with_stand_ins(loss, tiny_vlm, tmp_path, monkeypatch):
    from dftlab.run import run

    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    _, tokenizer, lm = tiny_vlm
    lm.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    tokenizer.image_processor.save_pretrained(tmp_path / "model")
    paths = _stand_ins(tmp_path)
    Image.new("RGB", (56, 84), (200, 10, 10)).save(tmp_path / "red.png")
    rows = [{"messages": [{"role": "user", "content": f"<image>what is {a}+1"},
                          {"role": "assistant", "content": f"{a}+1={a + 1}"}], "images": ["red.png"]}
            for a in range(24)]
    (tmp_path / "wethink.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose_config([
        "experiment=qwen2.5-vl-3b_wethink", "debug=recipe", f"loss={loss}", f"model.name_or_path={tmp_path / 'model'}",
        f"data.task.path={tmp_path / 'wethink.jsonl'}", f"paths.output_dir={tmp_path / 'run'}",
        *[f"data.task.eval_task.paths.{k}={v}" for k, v in paths.items()], "data.task.eval_task.max_new_tokens=4",
        "data.max_length=160"])
    summary = run(cfg)
    assert summary["steps"] == 2
    assert set(summary["eval"]["finetuned"]) == {"mathverse", "mathvision", "wemath"} and summary["eval"]["base"]
