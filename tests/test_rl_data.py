"""Rejection sampling (datasets, counts, resume, the command), preference-pair batches, and bad input
of the RL methods: each refused with its reason or counted, none a crash."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dftlab.config import compose_config
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError
from dftlab.evaluation.generate import generate_completions
from dftlab.rl.grading import BoxedAnswer
from dftlab.rl.rejection import ACCEPTED, COUNTS, PAIRS, SHARDS, Settings, sample_dataset
from dftlab.run import run, setup
from tests.conftest import ROOT, fast_cfg, tiny_lm
from tests.helpers.rl import CoinGrader, overrides, write_samples

ROWS = [{"prompt": f"J=1,Q=2,K=3|{a},{b},3,4|24:", "response": "1+1=2"} for a in range(1, 6) for b in (2, 5)]


@pytest.fixture(scope="module")
def lm_and_tok():
    tok = char_tokenizer()
    return tiny_lm(vocab=len(tok), seed=3), tok


def _read(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def _sample(lm_and_tok, out, grader=None, **settings):
    lm, tok = lm_and_tok
    s = Settings(**{"n": 4, "shard_size": 4, **settings})
    return sample_dataset(lm, tok, ROWS, grader or CoinGrader(), out, s, chat_template=False, spec={"model": "tiny"})


def test_datasets_and_counts_follow_the_verdicts(lm_and_tok, tmp_path):
    counts = _sample(lm_and_tok, tmp_path)
    shards = [rec for k in range(3) for rec in _read(tmp_path / SHARDS / f"{k:05d}.jsonl")]
    assert [r["index"] for r in shards] == list(range(len(ROWS)))  # every prompt once, in order
    usable = {r["index"]: [s for s in r["samples"] if s["finished"] and s["text"].strip()] for r in shards}
    good = {i: [s["text"] for s in ss if s["correct"]] for i, ss in usable.items()}
    bad = {i: [s["text"] for s in ss if not s["correct"]] for i, ss in usable.items()}
    accepted = _read(tmp_path / ACCEPTED)
    assert sorted((a["index"], a["response"]) for a in accepted) == sorted((i, t) for i, ts in good.items() for t in ts)
    pairs = _read(tmp_path / PAIRS)
    for p in pairs:  # a correct and an incorrect completion of the same prompt
        assert p["chosen"] in good[p["index"]] and p["rejected"] in bad[p["index"]]
        assert p["prompt"] == ROWS[p["index"]]["prompt"]
    assert len(pairs) == sum(min(len(good[i]), len(bad[i])) for i in good)  # disjoint pairs, as many as there are
    n_samples = 4 * len(ROWS)
    assert counts["samples"] == n_samples and counts["correct"] == len(accepted)
    assert counts["acceptance_rate"] == pytest.approx(len(accepted) / n_samples)
    assert counts["prompts_with_correct"] == sum(bool(g) for g in good.values())
    assert counts["pairs"] == len(pairs) > 0
    assert json.loads((tmp_path / COUNTS).read_text()) == counts


def test_a_restart_skips_finished_shards_and_gives_the_same_data(lm_and_tok, tmp_path):
    _sample(lm_and_tok, tmp_path)
    first = (tmp_path / ACCEPTED).read_text(), (tmp_path / PAIRS).read_text()
    (tmp_path / SHARDS / "00001.jsonl").unlink()  # as if stopped during the second shard
    grader = CoinGrader()
    _sample(lm_and_tok, tmp_path, grader)
    assert grader.calls == 4 * 4  # only that shard's 4 prompts x 4 samples were sampled again
    assert ((tmp_path / ACCEPTED).read_text(), (tmp_path / PAIRS).read_text()) == first


def test_other_settings_in_the_same_folder_are_refused(lm_and_tok, tmp_path):
    _sample(lm_and_tok, tmp_path)
    with pytest.raises(ConfigError, match="other settings.*n"):
        _sample(lm_and_tok, tmp_path, n=2)


def test_samples_cut_by_max_new_tokens_are_counted_not_used(lm_and_tok, tmp_path):
    counts = _sample(lm_and_tok, tmp_path, max_new_tokens=1)
    # one token is an end token or a cut sample: every cut one is left out of both datasets
    assert counts["truncated"] > 0
    assert counts["correct"] + counts["truncated"] <= counts["samples"]
    shards = [rec for k in range(3) for rec in _read(tmp_path / SHARDS / f"{k:05d}.jsonl")]
    cut = {s["text"] for r in shards for s in r["samples"] if not s["finished"]}
    assert not cut & {a["response"] for a in _read(tmp_path / ACCEPTED)}
    assert counts["prompts_all_truncated"] == sum(not any(s["finished"] for s in r["samples"]) for r in shards)


def test_the_completions_carry_the_sampled_ids(lm_and_tok):
    lm, tok = lm_and_tok
    outs = generate_completions(lm, tok, [r["prompt"] for r in ROWS[:3]], n=3, temperature=1.0, max_new_tokens=6,
                                seed=1)
    for group in outs:
        for c in group:
            assert c.finished == (c.ids[-1] == tok.eos_token_id)
            assert len(c.ids) <= 6 and tok.decode(c.ids, skip_special_tokens=True) == c.text


def test_boxed_answer_grades_training_rows():
    grader = BoxedAnswer(timeout=2.0)
    rows = [{"prompt": "q", "response": "so \\boxed{\\frac{1}{2}}"}, {"prompt": "q", "response": "no answer"}]
    scores = grader.score_many(rows[:1] * 2, ["it is \\boxed{0.5}", "it is \\boxed{2}"])
    assert [s["correct"] for s in scores] == [True, False]
    assert [grader.usable(r) for r in rows] == [True, False]


def test_the_generate_command(tmp_path):
    """`python generate.py` from a model directory, with the game's prompts; a bad setting named."""
    tok = char_tokenizer()
    tiny_lm(vocab=len(tok)).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "samples"
    cmd = [sys.executable, "generate.py", "model=hf", f"model.name_or_path={tmp_path / 'model'}",
           "data.task.n_train=10", "shard_size=4", "grader={_target_: tests.helpers.rl.CoinGrader}", f"out={out}",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads((out / COUNTS).read_text())
    assert counts["sampled_prompts"] == 10 and counts["samples"] == 40
    assert "acceptance rate" in proc.stdout and f"{counts['pairs']} pairs" in proc.stdout
    bad = subprocess.run([*cmd, "n=0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "n=0 is not allowed" in bad.stdout + bad.stderr


def test_ensure_samples_samples_once(tmp_path, monkeypatch):
    from dftlab.rl.generate_run import ensure_samples

    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    tok = char_tokenizer()
    tiny_lm(vocab=len(tok)).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    wanted = ["model=hf", f"model.name_or_path={tmp_path / 'model'}", "data.task.n_train=6",
              "grader={_target_: tests.helpers.rl.CoinGrader}"]
    folder = ensure_samples(wanted)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("samples-")
    stamp = (folder / COUNTS).stat().st_mtime_ns
    assert ensure_samples(wanted) == folder and (folder / COUNTS).stat().st_mtime_ns == stamp
    assert ensure_samples([*wanted, "n=2"]) != folder  # other settings, other samples


# --- preference pairs -----------------------------------------------------------------------


def test_pairs_share_their_micro_batch_and_the_step_counts_pairs(tmp_path):
    s = setup(fast_cfg(tmp_path / "run", "loss=dpo", *overrides("dpo", tmp_path / "samples"), "data.batch_size=8",
                       "data.micro_batch_size=2"))
    dm = s.datamodule
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = loader.batch_sampler.micro_batches(0)[0]
    batch = loader.collate_fn([dm.datasets["train"][key] for key in first])
    labels = batch["labels"]
    mask = labels != -100
    assert batch["step_tokens"] == 8  # the unit is the pair
    assert labels.shape[0] == 4  # 2 pairs, both sides of each
    for row in range(4):
        ids = batch["pair_id"][row][mask[row]].unique().tolist()
        sides = batch["pair_side"][row][mask[row]].unique().tolist()
        assert ids == [row // 2] and sides == [1.0 if row % 2 == 0 else -1.0]
    # the chosen side is the reference solution, the rejected one its corrupted copy
    pair = dm.datasets["train"].rows[batch["row_ids"][0]]
    assert pair.chosen.input_ids[: pair.chosen.prompt_len] == pair.rejected.input_ids[: pair.rejected.prompt_len]


@pytest.mark.parametrize("extra, match", [
    (["loss=dpo"], r"loss dpo reads \['pair_id', 'pair_side'\].*preference pairs"),
    (["loss=sft", "data=game24_pairs"], "loss sft averages over tokens, and PairDataModule counts pairs"),
    (["loss=sft", "rollout=grpo"], "does not use the sampled completions' advantages"),
    (["loss=grpo"], r"loss grpo reads \['advantage'\].*rollout=grpo"),
    (["loss=dpo", "data=game24_pairs", "engine.reduction=official"], "engine.reduction=official"),
])
def test_a_loss_without_its_data_is_refused_before_training(tmp_path, extra, match):
    folder = write_samples(tmp_path / "samples")
    with pytest.raises(ConfigError, match=match):
        setup(fast_cfg(tmp_path / "run", *extra, f"data.task.samples={folder}"
                       if "data=game24_pairs" in extra else "seed=0"))


def test_dpo_data_without_pairs_is_refused_naming_the_file(tmp_path):
    folder = write_samples(tmp_path / "samples")
    (folder / PAIRS).write_text("")
    with pytest.raises(ConfigError, match=r"pairs.jsonl: no pairs rows \(no prompt had both a correct"):
        run(fast_cfg(tmp_path / "run", "loss=dpo", "data=game24_pairs", f"data.task.samples={folder}"))


def test_bad_pair_rows_are_counted_with_their_line(tmp_path):
    folder = write_samples(tmp_path / "samples")
    lines = (folder / PAIRS).read_text().splitlines()
    lines[3] = json.dumps({"prompt": "x", "chosen": "1+1=2", "rejected": ""})
    (folder / PAIRS).write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"1 of 64 rows are bad.*empty_rejected.*pairs.jsonl:4"):
        run(fast_cfg(tmp_path / "run", "loss=dpo", "data=game24_pairs", f"data.task.samples={folder}"))
    summary = run(fast_cfg(tmp_path / "run2", "loss=dpo", "data=game24_pairs", f"data.task.samples={folder}",
                           "data.task.sampled_bad_fraction=0.05"))
    assert summary["data_skipped"]["source"] == {"empty_rejected": 1}


def test_an_unfinished_samples_folder_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="not a finished rejection-sampling folder"):
        run(fast_cfg(tmp_path / "run", "data=game24_rs", f"data.task.samples={tmp_path / 'half'}"))


def test_rft_trains_on_the_accepted_rows_and_validates_on_the_game(tmp_path):
    folder = write_samples(tmp_path / "samples", n=20)
    summary = run(fast_cfg(tmp_path / "run", "data=game24_rs", f"data.task.samples={folder}"))
    assert summary["samples"]["accepted_rows"] == 20 and summary["samples"]["file"].endswith(ACCEPTED)
    cfg = compose_config(["debug=tiny"])
    from dftlab.config import instantiate

    assert summary["steps"] == 2 and summary["val_ce"] is not None
    assert len(instantiate(cfg.data.task).val()) == 16  # validation: the game's own rows


def test_generation_seeding_is_untouched(lm_and_tok):
    lm, tok = lm_and_tok
    torch.manual_seed(5)
    a = generate_completions(lm, tok, ["A,2|24:"], n=2, temperature=1.0, max_new_tokens=4, seed=3)
    b = generate_completions(lm, tok, ["A,2|24:"], n=2, temperature=1.0, max_new_tokens=4, seed=3)
    assert [c.ids for c in a[0]] == [c.ids for c in b[0]]
