"""Every config composes; bad choices, keys and values fail before any model loads, naming the key."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from dftlab.config import CONFIG_DIR, compose_config, instantiate, validate
from dftlab.errors import ConfigError
from dftlab.losses import LossConfigError
from tests.conftest import FAST_ON_BASE, ROOT

GROUPS = ["model", "data", "loss", "optim", "trainer", "logger", "callbacks", "paths", "experiment", "rollout"]


def options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    validate(cfg)
    loss = instantiate(cfg.loss)
    assert loss.name == cfg.loss.name


def test_required_files_exist():
    for path in ["loss/sft", "loss/dft", "loss/focal", "loss/iw_sft", "logger/csv", "logger/wandb",
                 "trainer/cpu", "trainer/gpu", "trainer/ddp"]:
        assert (CONFIG_DIR / f"{path}.yaml").exists(), path


def test_unknown_choice_names_the_group():
    with pytest.raises(ConfigCompositionException, match="loss/nope"):
        compose_config(["loss=nope"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigCompositionException, match="optim.lrr"):
        compose_config(["optim.lrr=0.1"])


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lr=0", "optim.lr=0"),
        ("optim.lr=-1e-3", "optim.lr=-0.001"),
        ("optim.warmup_ratio=1.5", "optim.warmup_ratio"),
        ("data.micro_batch_size=5", "data.micro_batch_size=5 is not allowed: must divide the 32 rows a rank"),
        ("data.batch_size=0", "data.batch_size=0"),
        ("engine.path=fast", "engine.path='fast'"),
        ("engine.reduction=mean", "engine.reduction='mean'"),
        ("+trainer.accumulate_grad_batches=4", "trainer.accumulate_grad_batches"),
    ],
)
def test_bad_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        validate(compose_config([override]))


@pytest.mark.parametrize(
    "override, match", [("loss.gamma=-1", "loss.gamma"), ("+loss.beta=1", "loss.beta is not a parameter")]
)
def test_bad_loss_parameters_are_named(override, match):
    cfg = compose_config(["loss=focal", override])
    with pytest.raises(LossConfigError, match=match):
        instantiate(cfg.loss)


def test_cli_errors_before_any_model(tmp_path):
    """From the command line: the key is named, the exit code is non-zero, and nothing is built."""
    for args, expected in [
        (["loss=nope"], "loss/nope"),
        (["optim.lr=-1"], "optim.lr=-1"),
        (["loss=focal", "loss.gamma=-2"], "loss.gamma=-2 is not allowed"),
    ]:
        proc = subprocess.run(
            [sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path}/run"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**__import__("os").environ, "DFTLAB_CACHE": str(tmp_path / "cache")},
        )
        assert proc.returncode != 0
        assert expected in proc.stdout + proc.stderr, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        assert not (tmp_path / "cache").exists()


def test_a_missing_model_path_is_named_before_training(tmp_path):
    from dftlab.run import setup

    cfg = compose_config(["model=hf", f"model.name_or_path={tmp_path}/nope", f"paths.output_dir={tmp_path}/run"])
    with pytest.raises(FileNotFoundError, match=r"model.name_or_path='.*/nope': no such directory"):
        setup(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", options("model"))
def test_remote_code_is_off_unless_asked(model):
    assert compose_config([f"model={model}"]).model.get("trust_remote_code", False) is False


def test_setup_refuses_an_unresolved_embedded_base(tmp_path):
    from dftlab.run import setup

    with pytest.raises(ConfigError, match="model.name_or_path=embedded-base: resolve it first"):
        setup(compose_config([f"paths.output_dir={tmp_path}/run"]))


@pytest.mark.parametrize("override, match", [
    ("data.batch_size=3.5", "data.batch_size=3.5 is not allowed: a whole number"),
    ("engine.auto_mib=-1", "engine.auto_mib=-1.0 is not allowed"),
])
def test_typed_settings_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_config([override]))


def test_the_tiny_run_on_the_base_matches_debug_tiny():
    """FAST_ON_BASE is debug=tiny without its model: every non-model value debug=tiny changes is in it."""
    default, tiny, on_base = compose_config([]), compose_config(["debug=tiny"]), compose_config(FAST_ON_BASE)
    named = {o.split("=")[0] for o in FAST_ON_BASE}
    for node in ("data.task", "data", "trainer", "eval"):
        before = OmegaConf.to_container(OmegaConf.select(default, node), resolve=False)
        for key, value in OmegaConf.to_container(OmegaConf.select(tiny, node), resolve=False).items():
            full = f"{node}.{key}"
            if not isinstance(value, (dict, list)) and before.get(key) != value:
                assert full in named, f"debug/tiny sets {full}; add it to FAST_ON_BASE"
                assert OmegaConf.select(on_base, full) == value, full
