"""Two processes on CPU (gloo): DDP and FSDP2 fit, save, resume, export (FSDP2 also with a vision-language
model: its decoder layers and vision blocks sharded); chunked == naive under FSDP2."""

import os
import subprocess
import sys

import pytest
import torch

from dftlab.reporting.runs import load_run
from dftlab.vision.models import auto_class
from tests.conftest import FAST, PYTHONPATH, ROOT

pytestmark = pytest.mark.slow

STRATEGIES = {
    "ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    "fsdp": ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy.param_dtype=null"],
}
MODELS = {"text": FAST, "vision": ["experiment=game24_vision", "debug=tiny_vision"]}
COMMON = ["loss=dft", "data.batch_size=8", "data.micro_batch_size=2", "trainer.max_steps=6",
          "trainer.max_epochs=-1", "trainer.log_every_n_steps=1", "eval.enabled=false", "~callbacks.token_histograms"]


def train(run_dir, *overrides, cache, model="text"):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "DFTLAB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "train.py", *MODELS[model], *COMMON, f"hydra.run.dir={run_dir}", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_run(run_dir)


def losses(run):
    return {step: value for step, value in run.history("train/loss")}


@pytest.mark.parametrize("strategy, model", [("ddp", "text"), ("fsdp", "text"), ("fsdp", "vision")])
def test_fit_save_resume_export(tmp_path, strategy, model):
    args, cache = STRATEGIES[strategy], tmp_path / "cache"
    full = train(tmp_path / "full", *args, cache=cache, model=model)
    stop = "+callbacks.stop._target_=tests.helpers.stop_at.StopAt"
    cut = train(tmp_path / "cut", *args, stop, "+callbacks.stop.step=3", cache=cache, model=model)
    assert cut.summary["preempted"] and cut.summary["steps"] == 3
    resumed = train(tmp_path / "cut", *args, "ckpt_path=last", cache=cache, model=model)
    assert resumed.summary["steps"] == 6
    expected, got = losses(full), losses(resumed)
    assert sorted(got) == list(range(6))  # logged at steps 0..5: the first run's 0..2, then 3..5
    for step in range(3, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step
    # the export is one consolidated Hugging Face model (with its vision tower), equal in both runs
    auto = auto_class(tmp_path / "full" / "export")
    assert (auto.__name__ == "AutoModelForImageTextToText") == (model == "vision")
    a = auto.from_pretrained(tmp_path / "full" / "export").state_dict()
    b = auto.from_pretrained(tmp_path / "cut" / "export").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("loss", ["dft", "iw_sft"])  # iw_sft: the frozen reference is its own FSDP root
def test_chunked_equals_naive_under_fsdp(tmp_path, loss):
    runs = {path: train(tmp_path / path, *STRATEGIES["fsdp"], f"engine.path={path}", "trainer.max_steps=2",
                        f"loss={loss}", cache=tmp_path / "cache") for path in ("naive", "chunked")}
    for key in ("train/loss", "train/ce", "train/grad_norm"):
        naive, chunked = dict(runs["naive"].history(key)), dict(runs["chunked"].history(key))
        assert naive.keys() == chunked.keys() == {0, 1}
        for step in naive:
            assert chunked[step] == pytest.approx(naive[step], rel=1e-5), (key, step)


def test_multirun_of_ddp_jobs(tmp_path):
    """Each job of a Hydra multirun gets its own process group and output directory."""
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "train.py", "-m", *FAST, *COMMON, *STRATEGIES["ddp"], "loss=sft,dft",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [load_run(p.parent) for p in sorted((tmp_path / "sweep").glob("*/summary.json"))]
    assert [r.loss for r in runs] == ["sft", "dft"] and all(r.summary["steps"] == 6 for r in runs)


@pytest.mark.parametrize("tasks, devices, ok", [(8, 8, True), (8, 4, False), (1, "auto", False)])
def test_slurm_launcher_needs_one_task_per_device(tasks, devices, ok):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from dftlab.config import CONFIG_DIR, check_launcher
    from dftlab.errors import ConfigError

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", [f"hydra.launcher.tasks_per_node={tasks}", f"trainer.devices={devices}",
                                "hydra/launcher=submitit_slurm"], return_hydra_config=True)
    if ok:
        check_launcher(cfg.hydra.launcher, cfg.trainer)
    else:
        with pytest.raises(ConfigError, match=f"hydra.launcher.tasks_per_node={tasks} must equal trainer.devices"):
            check_launcher(cfg.hydra.launcher, cfg.trainer)
