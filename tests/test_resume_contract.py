"""What a resume takes from the checkpoint and what from the command line (see `dftlab.resume`): the
optimizer's settings and the batch size from the checkpoint, said in one line when the command line
differs; a new loss or length from the command line, said in one line; other data, tokenizer, data
settings, model or micro-batches per step refused, naming what changed, unless resume_allow_changes."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from dftlab.data.tokenizer import GAME_CHARS, char_tokenizer
from dftlab.errors import CheckpointError
from dftlab.run import run
from tests.conftest import fast_cfg
from tests.helpers import step_record

QUIET = ["eval.enabled=false", "~callbacks.token_histograms", "~callbacks.eval_during_training",
         "trainer.max_epochs=-1", "trainer.log_every_n_steps=1"]
RECORD = "+callbacks.record._target_=tests.helpers.step_record.StepRecord"


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """6 steps of SFT at lr 1e-3, global batch 16: its last checkpoint."""
    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        run(fast_cfg(root / "run", "loss=sft", "trainer.max_steps=6", *QUIET))
    return root / "run" / "checkpoints" / "last.ckpt"


def test_the_checkpoints_optimizer_and_batch_the_command_lines_loss_and_length(sft_run, tmp_path, monkeypatch,
                                                                                  caplog):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        summary = run(fast_cfg(out, "loss=dft", "optim.lr=1e-2", "data.batch_size=32", "trainer.max_steps=8", *QUIET,
                               RECORD, f"+callbacks.record.path={out / 'steps'}", f"ckpt_path={sft_run}"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert lines[0].startswith("resume: kept from the checkpoint, the command line's ignored: "
                               "data.batch_size=16 (not 32), optim.lr=0.001 (not 0.01)")
    assert lines[1] == ("resume: from the command line, used from step 7 on: loss.label=dft (was sft), "
                        "loss.name=dft (was sft), trainer.max_steps=8 (was 6)")
    steps = step_record.read(out / "steps")
    assert sorted(steps) == [7, 8]
    assert all(len(s["rows"]) == 16 and s["lr"] <= 1e-3 for s in steps.values())  # the checkpoint's
    used = OmegaConf.to_container(OmegaConf.load(out / "config.yaml"))
    assert (used["optim"]["lr"], used["data"]["batch_size"], used["loss"]["name"]) == (1e-3, 16, "dft")
    (entry,) = used["resumes"]
    assert entry["from"] == str(sft_run) and entry["step"] == 6
    assert entry["kept_from_checkpoint"]["optim.lr"] == {"checkpoint": 1e-3, "command_line": 1e-2}
    assert entry["changed"]["loss.name"] == {"checkpoint": "sft", "now": "dft"}
    assert summary["resumes"] == used["resumes"] and summary["label"] == "dft"


@pytest.mark.parametrize("override, named", [
    ("data.task.n_train=128", "data.task.n_train: 64 in the checkpoint, 128 now"),
    ("data.max_length=40", "data.max_length: 96 in the checkpoint, 40 now"),  # cuts rows (64 would not)
    ("seed=1", "data.seed: 0 in the checkpoint, 1 now"),  # the data order
    ("model.arch.hidden_size=64", "model.arch.hidden_size: 32 in the checkpoint, 64 now"),
    ("data.micro_batch_size=8", "micro-batches per step (data.micro_batch_size, ranks): 1 in the checkpoint, 2 now"),
])
def test_other_data_model_or_micro_batches_are_refused_naming_them(sft_run, tmp_path, monkeypatch, override, named):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=rf"^ckpt_path={sft_run} was trained with other data or another "
                                              rf"model: .*{named.replace('(', '.').replace(')', '.')}"):
        run(fast_cfg(tmp_path / "run", "loss=sft", "trainer.max_steps=8", *QUIET, override, f"ckpt_path={sft_run}"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def test_settings_that_leave_the_rows_alone_and_the_explicit_flag(sft_run, tmp_path, monkeypatch):
    """The test splits' size does not change what is trained on; resume_allow_changes=true lets a change
    through, and the run's config.yaml records it."""
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    assert run(fast_cfg(tmp_path / "a", "loss=sft", "trainer.max_steps=7", *QUIET, "data.task.n_test=8",
                        f"ckpt_path={sft_run}"))["steps"] == 7
    run(fast_cfg(tmp_path / "b", "loss=sft", "trainer.max_steps=7", *QUIET, "data.task.n_train=128",
                 "resume_allow_changes=true", f"ckpt_path={sft_run}"))
    (entry,) = OmegaConf.to_container(OmegaConf.load(tmp_path / "b" / "config.yaml"))["resumes"]
    assert entry["changed"]["data.task.n_train"] == {"checkpoint": 64, "now": 128}


def _game_rows(path, n=80):
    rows = [{"prompt": f"{i % 10},{(i + 3) % 10},2,4|24:", "response": f"{i % 10}+{(i + 3) % 10}=9"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("change", ["content", "tokenizer"])
def test_a_file_or_tokenizer_changed_in_place_is_refused(tmp_path, monkeypatch, change):
    """Same path, size and modification time; other bytes, or a tokenizer whose ids moved."""
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    data, tok = tmp_path / "train.jsonl", tmp_path / "tok"
    _game_rows(data)
    char_tokenizer().save_pretrained(tok)
    common = ["model=scratch", "model.arch.hidden_size=32", "model.arch.intermediate_size=64",
              "model.arch.num_hidden_layers=1", f"model.tokenizer={tok}", "data=jsonl", f"data.task.path={data}",
              "data.task.val_size=16", "data.task.chat_template=false", "data.batch_size=16", *QUIET]
    run(fast_cfg(tmp_path / "run", "trainer.max_steps=2", *common, fast=False))
    if change == "content":
        stat = data.stat()
        data.write_text(data.read_text().replace("=9", "=8"))
        os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        named = "the data source's content: sha256 "
    else:
        char_tokenizer(GAME_CHARS[1] + GAME_CHARS[0] + GAME_CHARS[2:]).save_pretrained(tok)
        named = "the tokenizer: sha256 "
    with pytest.raises(CheckpointError, match=f"was trained with other data or another model: .*{named}"):
        run(fast_cfg(tmp_path / "run", "trainer.max_steps=4", *common, "ckpt_path=last", fast=False))


def test_last_with_no_checkpoint_yet_starts_from_scratch(tmp_path, monkeypatch, caplog):
    """A first start of a requeued job (`run_id=$SLURM_JOB_ID ckpt_path=last`)."""
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    with caplog.at_level("INFO"):
        summary = run(fast_cfg(tmp_path / "run", "loss=sft", "trainer.max_steps=2", *QUIET, "ckpt_path=last"))
    assert summary["steps"] == 2 and "resumes" not in summary
    assert f"ckpt_path=last: no checkpoint in {tmp_path / 'run' / 'checkpoints'} yet: starting from scratch" \
        in caplog.text


def test_an_older_checkpoint_of_another_model_is_one_line(sft_run, tmp_path, monkeypatch):
    """A checkpoint that records no config (written before runs recorded theirs) whose weights do not fit."""
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    state = torch.load(sft_run, weights_only=True)
    del state["dftlab"]["run"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    with pytest.raises(CheckpointError, match=rf"^ckpt_path={old}: its weights do not fit this model \(size mismatch"):
        run(fast_cfg(tmp_path / "run", "loss=sft", "trainer.max_steps=8", *QUIET, "model.arch.hidden_size=64",
                     f"ckpt_path={old}"))
