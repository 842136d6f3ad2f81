"""Every W&B sweep file, offline: valid for W&B's schema, each run of its grid rendered as the agent
renders it and composed with Hydra to the intended values; and the same grid as its Hydra multirun
twin in configs/hparams_search/, job by job."""

import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dftlab.config import CONFIG_DIR, instantiate, validate
from dftlab.evaluation.report import HEADLINE
from dftlab.losses import REGISTRY
from tests.conftest import ROOT
from tests.sweeps.wandb_sweep import command, grid, load, schema_errors, validate_grid

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
AGENT = ["/usr/bin/env", "python", "train.py"]
COMMAND = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
# the run name each ablation gives a grid point (its W&B run name and multirun directory)
RUN_NAMES = {
    "lr": "{loss}_lr{optim.lr}_seed0",
    "lr_cpu": "{loss}_lr{optim.lr}_seed0",
    "batch_size": "{loss}_bs{data.batch_size}_seed0",
    "batch_size_cpu": "{loss}_bs{data.batch_size}_seed0",
    "loss_family": "{loss}_seed0",
}
# the CPU presets' time model (the embedded default's pace on 2 CPU cores): seconds per optimizer
# step at global batch 32 (proportional to the batch), and per run for start-up and evaluation
STEP_S_AT_32, RUN_OVERHEAD_S, BUDGET_S = 0.2, 30, 40 * 60


def expected_name(sweep_name: str, point: dict) -> str:
    name = RUN_NAMES[sweep_name]
    for key, value in point.items():
        name = name.replace("{" + key + "}", str(value))
    return name


@pytest.fixture(scope="module")
def hydra_compose():
    """`compose` with Hydra's own node (its group choices and sweeper params), initialised once."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield lambda overrides: compose("train", overrides=list(overrides), return_hydra_config=True)


def check_composed(cfg, point: dict, sweep_name: str) -> None:
    """The config a grid point composes to: valid, and holding the point's values and run name."""
    validate(cfg)
    assert instantiate(cfg.loss).name == cfg.loss.name
    choices = cfg.hydra.runtime.choices
    assert choices.hparams_search == sweep_name
    for key, value in point.items():
        if key in choices:
            assert choices[key] == value, key
        else:
            got = OmegaConf.select(cfg, key)
            assert got == value and type(got) is type(value), (key, got, value)
    if "loss" in point:  # a preset keeps its member's name and carries its own label
        assert cfg.loss.label == point["loss"] and cfg.loss.name in REGISTRY
    assert cfg.run_name == expected_name(sweep_name, point)
    assert cfg.trainer.max_steps == -1  # the data, not a step count, fixes each run's length


def hydra_jobs(hydra_compose, name: str) -> list[list[str]]:
    """The jobs of `python train.py -m hparams_search=NAME`, split by Hydra's basic sweeper's own
    code (a private module: the public API only runs a sweep)."""
    params = hydra_compose([f"hparams_search={name}"]).hydra.sweeper.params
    arguments = [f"{k}={v}" for k, v in params.items()] + [f"hparams_search={name}"]
    overrides = OverridesParser.create().parse_overrides(arguments)
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [list(job) for job in batch]


def parse(job: list[str]) -> dict:
    return {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(job)}


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_is_valid_for_wandb(name):
    path = ROOT / "sweeps" / f"{name}.yaml"
    sweep = load(path)
    assert schema_errors(sweep) == []
    validate_grid(sweep)
    assert sweep["name"] == name and sweep["method"] == "grid"
    assert sweep["metric"] == {"name": HEADLINE, "goal": "maximize"}
    assert (ROOT / sweep["program"]).is_file() and sweep["program"] == "train.py"
    assert sweep["command"] == COMMAND
    root = yaml.compose(path.read_text())
    node = next(v for k, v in root.value if k.value == "command")
    assert node.flow_style is False  # block form, one macro per line
    params = sweep["parameters"]
    assert params["hparams_search"] == {"value": name}
    assert params["logger"] == {"value": "wandb"} and params["logger.wandb.group"] == {"value": name}
    for key, p in params.items():
        for value in p.get("values", [p.get("value")]):
            assert value is not None, f"{key}: the agent would pass the string 'None'"
            if isinstance(value, str):  # `1e-4` without a dot is a YAML string: W&B would plot it as text
                with pytest.raises(ValueError):
                    float(value)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_run_composes_to_its_values(name, hydra_compose):
    sweep = load(ROOT / "sweeps" / f"{name}.yaml")
    runs = grid(sweep)
    swept = [p["values"] for p in sweep["parameters"].values() if "values" in p]
    assert len(runs) == math.prod(map(len, swept))
    for run in runs:
        argv = command(sweep, run)
        assert argv[:3] == AGENT
        cfg = hydra_compose(argv[3:])
        check_composed(cfg, run, name)
        assert cfg.logger.wandb.name == cfg.run_name and cfg.logger.wandb.group == name
        assert "csv" in cfg.logger  # the run directory keeps its metrics whatever W&B does


def test_argument_order_does_not_matter(hydra_compose):
    """The server sends a run's parameters sorted by name; Hydra applies them in any order alike."""
    sweep = load(ROOT / "sweeps" / "lr.yaml")
    args = command(sweep, grid(sweep)[-1])[3:]
    first, reversed_ = (OmegaConf.to_container(hydra_compose(a), resolve=False) for a in (args, args[::-1]))
    for cfg in (first, reversed_):
        del cfg["hydra"]
    assert first == reversed_


@pytest.mark.parametrize("name", SWEEPS)
def test_hydra_twin_has_the_same_grid(name, hydra_compose):
    """Job i of the multirun runs exactly the overrides of the sweep's run i, logger aside."""
    sweep = load(ROOT / "sweeps" / f"{name}.yaml")
    rendered = [[a for a in command(sweep, run)[3:] if not a.startswith("logger")] for run in grid(sweep)]
    jobs = hydra_jobs(hydra_compose, name)
    assert [sorted(job) for job in jobs] == [sorted(args) for args in rendered]


@pytest.mark.parametrize("name", SWEEPS)
def test_every_hydra_job_composes(name, hydra_compose):
    for job in hydra_jobs(hydra_compose, name):
        point = parse(job)
        cfg = hydra_compose(job)
        check_composed(cfg, point, name)


def test_every_hparams_search_has_a_sweep_file():
    assert SWEEPS == sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
    assert set(SWEEPS) == set(RUN_NAMES)


def test_loss_family_covers_every_loss():
    """Every loss that trains on demonstrations (DPO's pairs and GRPO's samples are other data: the
    RL comparison, configs/experiment/rl_*.yaml)."""
    values = load(ROOT / "sweeps" / "loss_family.yaml")["parameters"]["loss"]["values"]
    stems = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))
    assert values == [s for s in stems if not _reads_batch_fields(s)]
    multirun = load(CONFIG_DIR / "hparams_search" / "loss_family.yaml")["hydra"]["sweeper"]["params"]["loss"]
    assert multirun.split(",") == values  # the Hydra multirun twin


def _reads_batch_fields(loss: str) -> bool:
    from dftlab.config import compose_config

    return bool(instantiate(compose_config([f"loss={loss}"]).loss).token_fields)


def test_paper_grids():
    params = {n: load(ROOT / "sweeps" / f"{n}.yaml")["parameters"] for n in ("lr", "batch_size")}
    assert params["lr"]["optim.lr"]["values"] == [2e-4, 1e-4, 5e-5, 1e-5]
    assert params["batch_size"]["data.batch_size"]["values"] == [32, 64, 128, 256]
    assert params["lr"]["loss"]["values"] == params["batch_size"]["loss"]["values"] == ["sft", "dft"]


def test_cpu_presets_fit_the_time_budget(hydra_compose):
    """Both CPU ablations together, estimated from the time model above, stay under 40 minutes;
    the number of problems is fixed, so a larger batch takes fewer steps."""
    total = 0.0
    for name in ("lr_cpu", "batch_size_cpu"):
        cfg = hydra_compose([f"hparams_search={name}"])
        steps = {}
        for job in hydra_jobs(hydra_compose, name):
            batch = parse(job).get("data.batch_size", cfg.data.batch_size)
            steps[batch] = math.ceil(cfg.data.task.n_train / batch) * cfg.trainer.max_epochs
            total += steps[batch] * STEP_S_AT_32 * batch / 32 + RUN_OVERHEAD_S
        by_batch = [steps[b] for b in sorted(steps)]
        assert by_batch == sorted(set(by_batch), reverse=True)
    assert total <= BUDGET_S, f"{total / 60:.0f} minutes"


def test_sweep_readme_names_every_sweep_and_the_metric():
    text = (ROOT / "sweeps" / "README.md").read_text()
    assert HEADLINE in text and "wandb sync" in text
    for name in SWEEPS:
        assert f"sweeps/{name}.yaml" in text and f"hparams_search={name}" in text
