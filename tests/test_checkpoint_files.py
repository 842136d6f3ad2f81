"""Checkpoint files on real disks: written beside their destination and renamed (never through the
temporary directory, which may be another file system, or full); a process killed while saving leaves the
previous checkpoint whole and its leftovers are removed at the next start; a full disk, a truncated or
empty checkpoint, a file that is not one, `ckpt_path=last` without `run_id`: one line naming the file and
exit status 2, from the command a user runs."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dftlab import checkpoints
from dftlab.errors import CheckpointError
from dftlab.run import run
from tests.conftest import ROOT, fast_cfg

SAVES = ["trainer.max_steps=6", "eval.enabled=false", "callbacks.model_checkpoint.every_n_train_steps=2",
         "callbacks.model_checkpoint.save_top_k=-1", "~callbacks.token_histograms", "~callbacks.eval_during_training"]


def _cli(tmp_path, *args, script="train.py", timeout=600):
    """Run an entry point; returns (exit status, the first line it logged at ERROR, all output)."""
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, *([script] if script.endswith(".py") else ["-m", script]), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    errors = [line.split("[ERROR] - ", 1)[1] for line in out.splitlines() if "[ERROR] - " in line]
    return proc.returncode, (errors[0] if errors else None), out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step run with a step checkpoint every 2 steps."""
    root = tmp_path_factory.mktemp("ckpt_files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        run(fast_cfg(root / "run", "loss=sft", *SAVES))
    return root / "run"


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_saves_never_go_through_the_temporary_directory(tmp_path, monkeypatch):
    """The temporary directory on another file system (the usual cluster layout): a rename across file
    systems fails (EXDEV), and every rename must stay inside the checkpoints' own folder."""
    elsewhere = tmp_path / "other_fs_tmp"
    elsewhere.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(elsewhere))
    renames, real_replace = [], os.replace

    def replace(src, dst, *args, **kwargs):
        renames.append((Path(src), Path(dst)))
        if Path(src).parent != Path(dst).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    run(fast_cfg(tmp_path / "run", "loss=sft", *SAVES))
    saved = [(s, d) for s, d in renames if d.suffix == ".ckpt"]
    assert len(saved) == 6  # step 2, 4 and 6, and last.ckpt at each
    assert all(s.parent == d.parent == tmp_path / "run" / "checkpoints" for s, d in saved)
    assert not list(elsewhere.iterdir())
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_full_temporary_directory_does_not_stop_a_run(tmp_path, monkeypatch):
    """Every `tempfile` call fails with ENOSPC: the run saves its checkpoints and finishes."""
    from tests.helpers import faulty_disk

    for name in faulty_disk.TEMPFILE:
        monkeypatch.setattr(f"tempfile.{name}", faulty_disk.full)
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    run(fast_cfg(tmp_path / "run", "loss=sft", *SAVES))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_kill_while_saving_leaves_the_previous_checkpoint_and_the_next_start_cleans_up(tmp_path):
    """The process dies halfway through writing step000004.ckpt (the 3rd checkpoint write)."""
    run_dir = tmp_path / "run"
    rc, _, out = _cli(tmp_path, "die", "3", "debug=tiny", *SAVES, f"hydra.run.dir={run_dir}",
                      script="tests.helpers.faulty_disk")
    assert rc == 137, out[-3000:]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names[:2] == ["last.ckpt", "step000002.ckpt"] and len(names) == 3
    assert names[2].startswith("step000004.ckpt.partial")  # what the kill left
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    rc, error, out = _cli(tmp_path, "debug=tiny", *SAVES, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert rc == 0, out[-3000:]
    assert f"removed 1 partial checkpoint(s) left by an interrupted save: {names[2]}" in out
    assert "resuming from" in out and "(step 2)" in out
    assert not list((run_dir / "checkpoints").glob("*.partial*"))


def _damage(last: Path, how: str) -> None:
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2] if how == "truncated" else b"")
    os.utime(last.parent / "step000004.ckpt")  # the newest whole one


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_last_checkpoint_names_the_whole_one_beside_it(finished, tmp_path, monkeypatch, damage):
    run_dir = _copy(finished, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    _damage(last, damage)
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    what = "truncated or damaged" if damage == "truncated" else r"empty \(0 bytes\)"
    whole = run_dir / "checkpoints" / "step000004.ckpt"
    with pytest.raises(CheckpointError, match=f"^ckpt_path={last}: {what}.*; the checkpoint step000004.ckpt beside it "
                                              f"is whole: ckpt_path={whole}$"):
        run(fast_cfg(run_dir, "loss=sft", *SAVES, "ckpt_path=last"))


def test_last_without_run_id_is_refused_naming_run_id(tmp_path):
    """Without run_id, the start is a new run directory (named by the clock): it can have no checkpoint."""
    rc, error, out = _cli(tmp_path, "debug=tiny", *SAVES, f"paths.log_dir={tmp_path / 'logs'}", "ckpt_path=last")
    assert rc == 2, out[-3000:]
    assert error.startswith(f"ckpt_path=last needs run_id=<the run's directory name in {tmp_path / 'logs' / 'runs'}>")


def _not_a_checkpoint(finished: Path, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / ("rows.jsonl" if kind == "jsonl" else "step000004.ckpt")
    if kind == "jsonl":
        path.write_text('{"prompt": "1,2,3,4|24:", "response": "1*2=2"}\n')
    else:
        path.write_bytes((finished / "checkpoints" / "step000004.ckpt").read_bytes()[:1000])
    return path


@pytest.mark.parametrize("kind", ["jsonl", "truncated"])
def test_eval_of_a_file_that_is_not_a_whole_checkpoint(finished, tmp_path, kind):
    from dftlab.config import compose_config
    from dftlab.eval_run import evaluate_from_config

    path = _not_a_checkpoint(finished, tmp_path, kind)
    what = r"not a checkpoint \(a JSON or JSONL file" if kind == "jsonl" else r"truncated or damaged \(1000 bytes"
    with pytest.raises(CheckpointError, match=f"^ckpt={path}: {what}"):
        evaluate_from_config(compose_config([f"paths.output_dir={tmp_path / 'eval'}", f"ckpt={path}"], "eval"))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["enospc", "truncated", "empty", "eval_jsonl", "eval_truncated"])
def test_each_failure_is_one_line_and_exit_status_2(finished, tmp_path, case):
    """As a user meets them: the entry point's exit status and first line, no traceback."""
    run_dir = tmp_path / "run"
    if case == "enospc":  # the 3rd checkpoint write (step000004.ckpt) finds the disk full
        args = ["enospc", "3", "debug=tiny", *SAVES, f"hydra.run.dir={run_dir}"]
        rc, error, out = _cli(tmp_path, *args, script="tests.helpers.faulty_disk")
        expected = f"{run_dir / 'checkpoints' / 'step000004.ckpt'}: checkpoint not written: no space left on its disk"
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "step000002.ckpt"]
    elif case in ("truncated", "empty"):
        _damage(_copy(finished, run_dir) / "checkpoints" / "last.ckpt", case)
        rc, error, out = _cli(tmp_path, "debug=tiny", *SAVES, f"hydra.run.dir={run_dir}", "ckpt_path=last")
        expected = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}: "
    else:
        path = _not_a_checkpoint(finished, tmp_path, case.removeprefix("eval_"))
        rc, error, out = _cli(tmp_path, f"ckpt={path}", f"paths.log_dir={tmp_path / 'logs'}", script="eval.py")
        expected = f"ckpt={path}: "
    print(f"{case}: exit status {rc}: {error}")
    assert rc == 2 and "Traceback" not in out, out[-3000:]
    assert error.startswith(expected), error


def test_read_names_what_is_wrong(tmp_path):
    """The same checks in-process, including a folder and a missing file."""
    (tmp_path / "folder").mkdir()
    cases = {"missing.ckpt": "no such file", "folder": "a folder that is not a distributed checkpoint"}
    for name, what in cases.items():
        with pytest.raises(CheckpointError, match=f"^ckpt_path={tmp_path / name}: {what}"):
            checkpoints.read(tmp_path / name, "ckpt_path")
    torch.save({"not": "lightning"}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        checkpoints.read(tmp_path / "plain.pt", "ckpt_path")
