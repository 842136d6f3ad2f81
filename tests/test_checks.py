"""Fail fast and clearly: every mistake that needs no model fails before the embedded base is built,
in seconds, with one line naming the key or the file and exit status 2 (dftlab.checks)."""

import json
import os
import resource
import subprocess
import sys
import time

import pytest
import torch

from dftlab import checks
from dftlab.config import compose_config, validate
from dftlab.errors import ConfigError
from tests.conftest import ROOT


def _file(tmp_path, name="ok.jsonl", n=300):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"prompt": "1+1=", "response": "2"}) + "\n" for _ in range(n)))
    return path


def _cases(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "nosucharch"}')
    (tmp_path / "odd" / "tokenizer_config.json").write_text("{}")
    data = _file(tmp_path)
    cases = [
        (["data=jsonl"], "data.task.path is required"),
        (["data=jsonl", f"data.task.path={tmp_path}/nope.jsonl"], "data.task.path='"),
        (["data=jsonl", f"data.task.path={data}"], "the character tokenizer of the embedded base has none"),
        (["data=jsonl", f"data.task.path={data}", "data.task.val_size=0"], "data.task.val_size=0 is not allowed"),
        (["data=jsonl", f"data.task.path={data}", "data.task.val_size=-1"], "data.task.val_size=-1 is not allowed"),
        (["data=jsonl", "data.task.path=someone/some-dataset", "data.task.chat_template=false"],
         "data.task.path='someone/some-dataset': this dataset is not in the local Hugging Face cache"),
        (["data.batch_size=abc"], "data.batch_size='abc' is not allowed: a whole number"),
        (["data.batch_size=3.5"], "data.batch_size=3.5 is not allowed: a whole number"),
        (["optim.lr=abc"], "optim.lr='abc' is not allowed: a number"),
        (["optim.lr=inf"], "optim.lr=inf is not allowed: must be finite"),
        (["optim.eps=-1"], "optim.eps=-1 is not allowed: must be > 0"),
        (["optim.min_lr_ratio=-1"], "optim.min_lr_ratio=-1 is not allowed"),
        (["seed=-1"], "seed=-1 is not allowed"),
        (["loss=dft", "loss.alpha=inf"], "loss.alpha=inf is not allowed: must be finite"),
        (["loss=focal", "loss.gamma=abc"], "loss.gamma='abc' is not allowed: a number"),
        (["callbacks.token_histograms.batch_size=abc"], "callbacks.token_histograms.batch_size='abc'"),
        (["model=hf", f"model.name_or_path={tmp_path}/empty_dir"], "no config.json in it"),
        (["model=hf", f"model.name_or_path={tmp_path}/odd"], "model_type 'nosucharch' is not an architecture"),
        (["model=hf", "model.name_or_path=someone/some-model"],
         "model.name_or_path='someone/some-model': this model is not in the local Hugging Face cache"),
        (["run_id=../x"], "run_id='../x' is not allowed"),
        (["optim.lrr=1"], "Could not override 'optim.lrr'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["trainer=gpu"], "trainer.accelerator=gpu: torch sees no CUDA GPU"))
    return cases


def test_each_mistake_fails_in_seconds_with_one_line_and_status_2(tmp_path):
    """From the command line, on a fresh cache, offline: each case exits with 2, its first line names
    the key or the file, no traceback, no base built; each in under 10 s of CPU time (the wall time
    on a shared machine is mostly waiting for the CPU)."""
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    env.pop("HYDRA_FULL_ERROR", None)
    failures = []
    for args, expected in _cases(tmp_path):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path}/run"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        ok = (proc.returncode == 2 and lines and expected in lines[0] and "Traceback" not in proc.stderr
              and cpu < 10 and not (tmp_path / "cache").exists())
        if not ok:
            failures.append((args, proc.returncode, round(cpu, 1), round(wall, 1), lines[:3]))
    assert not failures, failures
    assert not (tmp_path / "x").exists() and not (ROOT / "logs" / "x").exists()  # run_id=../x wrote nothing


@pytest.mark.parametrize("args, what", [
    (["model=hf", "model.name_or_path=someone/some-model"], "model.name_or_path='someone/some-model': this model"),
    (["data=jsonl", "data.task.path=someone/some-dataset", "data.task.chat_template=false"],
     "data.task.path='someone/some-dataset': this dataset"),
])
def test_a_hub_name_without_a_network_fails_in_seconds(tmp_path, args, what):
    """Without HF_HUB_OFFLINE, on a machine where the hub cannot be reached (here: an endpoint whose
    port refuses connections), one line naming the host, not a retry loop and a traceback."""
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, lines
    assert what in lines[0] and "the hub is unreachable (127.0.0.1 cannot be reached)" in lines[0], lines[0]
    assert not (tmp_path / "cache").exists()


def test_a_traceback_with_hydra_full_error(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "train.py", "optim.lr=abc", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "optim.lr='abc'" in proc.stderr


@pytest.mark.parametrize("override, match", [
    ("optim.grad_clip=nan", "optim.grad_clip=nan is not allowed: must be finite"),
    ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1"),
    ("optim.betas=[0.9]", "optim.betas=[0.9] is not allowed: two values in [0, 1)"),
    ("trainer.max_steps=0", "trainer.max_steps=0 is not allowed: -1 (no limit) or >= 1"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5 is not allowed: a whole number"),
    ("model.lora.r=abc", "model.lora.r='abc'"),
    ("eval.max_problems=0", "eval.max_problems=0"),
    ("engine.chunk_mib=inf", "engine.chunk_mib=inf is not allowed: must be finite"),
    ("callbacks.eval_during_training.at_start=maybe", "callbacks.eval_during_training.at_start='maybe'"),
    ("data.task.n_val=0", "data.task.n_val=0"),
    ("+callbacks.token_histograms.every=3", "callbacks.token_histograms.every is not an argument of "
                                            "dftlab.callbacks.token_histograms.TokenHistograms; its arguments are"),
])
def test_values_are_checked_for_type_finiteness_and_range(override, match):
    with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config([override]))


def test_every_composed_default_passes():
    for overrides in ([], ["experiment=base"], ["data=jsonl", "data.task.path=x.jsonl"], ["trainer=fsdp"]):
        checks.values(compose_config(overrides))


def test_a_hub_model_in_the_local_cache_passes_offline(tmp_path, monkeypatch):
    """The offline check looks the model up in the hub cache (huggingface_hub's own layout)."""
    snapshot = tmp_path / "models--someone--cached" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--cached" / "refs").mkdir()
    (tmp_path / "models--someone--cached" / "refs" / "main").write_text("abc")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.file_download.HF_HUB_CACHE", str(tmp_path), raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    checks.hub_reachable.cache_clear()
    assert checks.hub_model_cached("someone/cached", None)
    checks.model_source(compose_config(["model=hf", "model.name_or_path=someone/cached"]))
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        checks.model_source(compose_config(["model=hf", "model.name_or_path=someone/other"]))
    checks.hub_reachable.cache_clear()  # the answer depended on the patched HF_HUB_OFFLINE


def test_chat_templates_are_read_from_the_tokenizer_files(tmp_path):
    from dftlab.data.text_task import TextTask

    task = [("data.task", TextTask("x.jsonl"))]
    with_template, without = tmp_path / "with", tmp_path / "without"
    for folder, config in ((with_template, {"chat_template": "{{ messages }}"}), (without, {})):
        folder.mkdir()
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    checks.chat_template(compose_config(["model=hf", f"model.name_or_path={with_template}"]), task)
    with pytest.raises(ConfigError, match=r"data.task: text puts its prompts in the tokenizer's chat template, and "
                                          r"'.*without' has none"):
        checks.chat_template(compose_config(["model=hf", f"model.name_or_path={without}"]), task)
    checks.chat_template(compose_config(["model=hf", f"model.name_or_path={without}"]),
                         [("data.task", TextTask("x.jsonl", chat_template=False))])
