"""The studies' experiments compose, share their bases with the default and with each other, and
differ from one another only where their reports allow."""

import pytest
from omegaconf import OmegaConf

from dftlab.config import compose_config, validate
from dftlab.embedded_base import base_config, base_key
from dftlab.reporting import diversity, prior, study
from dftlab.reporting.runs import Run

STUDIES = ["study", "study_temperature", "study_prior", "study_frozen"]


def _run(*overrides) -> Run:
    """What a run of these overrides would write as its config.yaml."""
    cfg = compose_config([*overrides, "paths.output_dir=/runs/x", "run_id=x"])
    validate(cfg)
    return Run(None, OmegaConf.to_container(cfg, resolve=True), {})


def _key(*overrides) -> str:
    return base_key(base_config(compose_config(list(overrides))))


@pytest.mark.parametrize("experiment", STUDIES)
@pytest.mark.parametrize("strength", [None, "weak", "default", "strong"])
def test_every_study_composes_with_every_prior(experiment, strength):
    run = _run(f"experiment={experiment}", *([f"+prior={strength}"] if strength else []))
    assert run.get("eval.samples") == {"n": 8, "temperature": 1.0, "top_p": 1.0}
    assert run.get("data.task.ood_n_cards") is None  # no five-card split


def test_the_bases():
    default = _key()
    # the default arm of every study fine-tunes the default run's base, the one already cached
    assert _key("experiment=study_temperature") == _key("experiment=study_prior", "+prior=default") == default
    assert _key("experiment=study_frozen") == _key("experiment=frozen") != default
    steps = {s: base_config(compose_config(["experiment=study_prior", f"+prior={s}"])) for s in ("weak", "strong")}
    assert [cfg.trainer.max_steps for cfg in steps.values()] == [200, 3200]
    assert len({default, *(base_key(cfg) for cfg in steps.values())}) == 3
    # they differ from the default's base in their steps only
    reference = OmegaConf.to_container(base_config(compose_config([])), resolve=False)
    for cfg in steps.values():
        other = OmegaConf.to_container(cfg, resolve=False)
        for section in ("model", "data", "loss", "optim", "engine", "seed"):
            assert other[section] == reference[section], section
        assert other["trainer"] | {"max_steps": 800} == reference["trainer"]


def test_the_shared_runs_are_one_recipe():
    """A default-prior run of study_temperature serves study_prior and study_frozen: their own runs
    differ from it only in what their reports allow."""
    shared = [
        _run("experiment=study_temperature", f"loss={loss}", f"seed={seed}")
        for loss in ("sft", "dft")
        for seed in (0, 2)
    ]
    weak = _run("experiment=study_prior", "+prior=weak", "loss=dft", "seed=1")
    study.check_same_recipe([*shared, weak], prior.ALLOWED)
    frozen = _run("experiment=study_frozen", "loss=sft", "seed=1")
    study.check_same_recipe([*shared, frozen], diversity.ALLOWED)
    with pytest.raises(SystemExit, match="differ in data.task.train_rules"):
        study.check_same_recipe([*shared, frozen], prior.ALLOWED)
    assert weak.get("run_name") == "dft_base200" and frozen.get("run_name") == "frozen_sft"
