"""A stop signal is honoured anywhere: between generate batches (evaluation during training, the
end-of-run evaluation), between token-histogram batches, between optimizer steps; what a resume
needs is saved, and the resumed run's results equal an uninterrupted run's, without redoing the
finished parts. In-process here (signals sent to this process); in real subprocesses in
`tests/test_signals_subprocess.py`."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from dftlab import stopping
from dftlab.callbacks.eval_during_training import EvalDuringTraining
from dftlab.callbacks.token_histograms import TokenHistograms
from dftlab.data.tokenizer import char_tokenizer
from dftlab.evaluation.generate import generate
from dftlab.evaluation.journal import Journal
from dftlab.formats.eval_points import DIR, POINTS, read_points
from dftlab.run import run
from tests.conftest import fast_cfg, tiny_lm

# 4 steps; accuracy during training and histograms at steps 0, 2 and 4; an end-of-run evaluation
# greedy and sampled, in generate batches of 4 sequences
RUN = ["data.task.n_test=4", "trainer.max_steps=4", "trainer.max_epochs=-1", "eval.base=false", "eval.batch_size=4",
       "eval.samples={n: 2}", "callbacks.eval_during_training.batch_size=4",
       "callbacks.eval_during_training.every_n_steps=2", "callbacks.eval_during_training.max_problems=null",
       "callbacks.token_histograms.every_n_steps=2", "callbacks.token_histograms.batch_size=8",
       "callbacks.model_checkpoint.every_n_train_steps=1"]


def _results(run_dir) -> dict:
    """What a finished run measured: its summary's evaluation, every completion, the points during
    training, the histograms, the exported weights."""
    summary = json.loads((run_dir / "summary.json").read_text())
    completions = {p.relative_to(run_dir).as_posix(): p.read_text()
                   for p in sorted((run_dir / "eval").rglob("*.jsonl"))}
    points = sorted((p["step"], p["split"], p["value"], p["well_formed"], p["n"])
                    for p in read_points(run_dir / DIR / POINTS))
    histograms = {p.name: p.read_text() for p in sorted((run_dir / "token_probs").glob("*.csv"))}
    return {"eval": summary["eval"], "val_ce": summary["val_ce"], "steps": summary["steps"],
            "completions": completions, "points": points, "histograms": histograms,
            "weights": load_file(run_dir / "export" / "model.safetensors")}


def _same(a: dict, b: dict) -> None:
    assert a["steps"] == b["steps"] and a["val_ce"] == b["val_ce"] and a["eval"] == b["eval"]
    assert a["completions"] == b["completions"] and a["completions"]
    assert a["points"] == b["points"] and a["histograms"] == b["histograms"]
    same_weights(a["weights"], b["weights"])


def same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def uninterrupted_run(root, overrides) -> dict:
    """The results of an uninterrupted tiny run in `root/full` (caches in `root/cache`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        run(fast_cfg(root / "full", *overrides))
    return _results(root / "full")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    return root, uninterrupted_run(root, RUN)


def _kill_self_on(monkeypatch, cls, method: str, when, sig=signal.SIGTERM):
    """`cls.method` sends `sig` to this process the first time `when(self, *args)` holds, then runs."""
    original, sent = getattr(cls, method), []

    def wrapped(self, *args, **kwargs):
        if not sent and when(self, *args):
            sent.append(True)
            os.kill(os.getpid(), sig)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)
    return sent


def test_a_signal_during_the_final_evaluation_keeps_its_finished_batches(uninterrupted, monkeypatch, caplog):
    root, full = uninterrupted
    monkeypatch.setenv("DFTLAB_CACHE", str(root / "cache"))
    cut = root / "final"
    adds = []
    original_add = Journal.add

    def add(self, batch, completions):  # the signal arrives while the third greedy batch is generated
        original_add(self, batch, completions)
        adds.append(batch)
        if len(adds) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Journal, "add", add)
    summary = run(fast_cfg(cut, *RUN))
    assert summary["preempted"] and summary["stopped_by"] == "SIGTERM" and summary["stopped_in"] == "evaluation"
    assert summary["steps"] == 4 and summary["exported_at"] == 4
    (partial,) = (cut / "eval" / "partial").glob("*.jsonl")
    assert len(partial.read_text().splitlines()) == 2  # the batch cut short by the signal is not kept
    monkeypatch.setattr(Journal, "add", original_add)
    with caplog.at_level("INFO"):
        resumed = run(fast_cfg(cut, *RUN, "ckpt_path=last"))
    assert not resumed.get("preempted")
    assert "resuming a stopped generation: 2 of 5 batches already finished" in caplog.text
    assert not (cut / "eval" / "partial").exists()
    _same(_results(cut), full)


@pytest.mark.parametrize("cls, method", [(EvalDuringTraining, "_measure"), (TokenHistograms, "_evaluate")])
def test_a_signal_during_a_pass_between_steps_saves_that_step(uninterrupted, monkeypatch, cls, method):
    """Stopped during the step-2 measurement: step 2 is saved, the resumed run measures that point
    (and none measured before), trains steps 3 and 4 and ends as the uninterrupted run."""
    root, full = uninterrupted
    monkeypatch.setenv("DFTLAB_CACHE", str(root / "cache"))
    cut = root / f"during_{cls.__name__}"
    sent = _kill_self_on(monkeypatch, cls, method, lambda self, trainer, *_: trainer.global_step == 2)
    summary = run(fast_cfg(cut, *RUN))
    assert sent and summary["preempted"] and summary["stopped_in"] == "training" and summary["steps"] == 2
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert {p["step"] for p in read_points(cut / DIR / POINTS)} == {0}
    monkeypatch.undo()
    monkeypatch.setenv("DFTLAB_CACHE", str(root / "cache"))
    measured = []
    _kill_self_on(monkeypatch, EvalDuringTraining, "_measure", lambda self, trainer, *_: measured.append(
        trainer.global_step) and False)
    run(fast_cfg(cut, *RUN, "ckpt_path=last"))
    assert measured == [2, 4]  # step 0 is not measured again
    _same(_results(cut), full)


def test_sigint_saves_like_sigterm(uninterrupted, monkeypatch):
    root, _ = uninterrupted
    monkeypatch.setenv("DFTLAB_CACHE", str(root / "cache"))
    cut = root / "sigint"
    _kill_self_on(monkeypatch, EvalDuringTraining, "_measure", lambda self, trainer, *_: trainer.global_step == 2,
                  signal.SIGINT)
    summary = run(fast_cfg(cut, *RUN))
    assert summary["stopped_by"] == "SIGINT" and summary["steps"] == 2 and stopping.exit_status("SIGINT") == 130
    assert (cut / "checkpoints" / "last.ckpt").exists()
    assert stopping.exit_status("SIGTERM") == 0 and stopping.exit_status("SIGUSR1") == 0


# --- generation -------------------------------------------------------------------------------


@pytest.fixture
def lm_and_tokenizer():
    tok = char_tokenizer()
    return tiny_lm(vocab=len(tok)), tok


PROMPTS = [f"{a},{b},{c}|24:" for a in "A23456" for b in "789" for c in "JQ"][:12]


@pytest.mark.parametrize("temperature, n", [(0.0, 1), (1.0, 2)])
def test_a_stopped_generation_resumes_with_the_same_completions(lm_and_tokenizer, tmp_path, temperature, n):
    lm, tok = lm_and_tokenizer
    common = {"max_new_tokens": 12, "temperature": temperature, "n": n, "batch_size": 4, "seed": 3}
    with stopping.on_signals([]):
        full = generate(lm, tok, PROMPTS, **common)

    class StopAfterTwo(Journal):
        def add(self, batch, completions):
            super().add(batch, completions)
            if batch == 1:
                stopping.request("SIGTERM")

    journal = StopAfterTwo(tmp_path, "tiny")
    with stopping.on_signals([]), pytest.raises(stopping.StopRequested):
        generate(lm, tok, PROMPTS, journal=journal, **common)
    calls = []
    original = lm.generate
    lm.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    with stopping.on_signals([]):
        resumed = generate(lm, tok, PROMPTS, journal=Journal(tmp_path, "tiny"), **common)
    assert resumed == full
    per_batch = 4 // n
    assert len(calls) == -(-len(PROMPTS) // per_batch) - 2  # the two finished batches are not generated again
    with stopping.on_signals([]):  # another model's batches are not taken
        assert generate(lm, tok, PROMPTS, journal=Journal(tmp_path, "other"), **common) == full


def test_a_signal_ends_generate_within_a_decoding_step(lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    steps = []
    original = lm.forward

    def forward(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            stopping.request("SIGTERM")
        return original(*args, **kwargs)

    lm.forward = forward
    with stopping.on_signals([]), pytest.raises(stopping.StopRequested):
        generate(lm, tok, PROMPTS[:4], max_new_tokens=200, batch_size=4)
    assert len(steps) <= 4  # not 200
    with stopping.on_signals([]):  # the flag is cleared for the next run
        assert stopping.requested() is None
