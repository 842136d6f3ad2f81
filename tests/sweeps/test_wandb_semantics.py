"""The local stand-in for W&B's server and agent (tests/sweeps/wandb_sweep.py) on small sweeps whose
outcome W&B documents, and against the installed `wandb` client's own argument rendering."""

import pytest
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from tests.sweeps.wandb_sweep import SweepError, args_no_hyphens, command, grid, schema_errors

COMMAND = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]


def sweep(**parameters):
    return {"method": "grid", "program": "train.py", "command": COMMAND, "parameters": parameters}


def test_grid_sorts_names_and_varies_the_last_fastest():
    runs = grid(sweep(b={"values": [1, 2]}, a={"values": ["x", "y"]}, c={"value": True}))
    assert runs == [
        {"a": "x", "b": 1, "c": True}, {"a": "x", "b": 2, "c": True},
        {"a": "y", "b": 1, "c": True}, {"a": "y", "b": 2, "c": True},
    ]
    assert [list(r) for r in runs] == [["a", "b", "c"]] * 4


def test_grid_runs_a_combination_once():
    # 2 and 2.0 dump alike once the float has gone through the server (as an int)
    assert grid(sweep(a={"values": [2, 2.0, 3]})) == [{"a": 2}, {"a": 3}]


@pytest.mark.parametrize("value", [5e-05, 1.0e-4, 3, 2.0, True, False, None, "dft", [1, 2], "a b"])
def test_rendering_matches_the_wandb_client(value):
    run = {"b.c": value, "a": 1}
    ours = args_no_hyphens(run)
    config = {k: {"value": v} for k, v in run.items()}
    if isinstance(value, float) and value.is_integer():  # the client sees it after the server's JSON
        config["b.c"]["value"] = int(value)
    assert ours == create_sweep_command_args({"args": config})["args_no_hyphens"]


def test_agent_command_macros(monkeypatch):
    monkeypatch.setenv("DFTLAB_EXTRA", "seed=3")
    s = {**sweep(a={"value": 0.1}), "command": [*COMMAND, "${envvar:DFTLAB_EXTRA}", "${unknown_macro}", "x=1"]}
    assert command(s, grid(s)[0]) == ["/usr/bin/env", "python", "train.py", "a=0.1", "seed=3", "x=1"]
    assert create_sweep_command(["${envvar:DFTLAB_EXTRA}"]) == ["seed=3"]  # the client's own substitution


@pytest.mark.parametrize(
    "config, message",
    [
        ({"parameters": {"a": {"value": 1}}}, "`method` is required"),
        ({"method": "grids", "parameters": {"a": {"value": 1}}}, "method 'grids'"),
        ({"method": "grid", "metrics": [], "programme": "x.py"}, "unknown top-level key 'programme'"),
        ({"method": "grid", "metric": {"name": "x", "goal": "max"}}, "metric goal 'max'"),
        ({"method": "grid", "metric": {"goal": "maximize"}}, "string `name`"),
        ({"method": "grid", "command": "python train.py"}, "`command` is a list"),
        ({"method": "grid", "parameters": {}}, "non-empty mapping"),
        ({"method": "grid", "parameters": {"+lr": {"value": 1}}}, "parameter name '+lr'"),
        ({"method": "grid", "parameters": {"a": {"values": []}}}, "`values` is a non-empty list"),
        ({"method": "grid", "parameters": {"a": {"value": 1, "values": [1]}}}, "constant takes no `values`"),
        ({"method": "grid", "parameters": {"a": {"distribution": "normal", "mu": "0"}}}, "`mu` is a number"),
        ({"method": "grid", "parameters": {"a": {"distribution": "uniform", "min": 0}}}, "uniform needs `max`"),
        ({"method": "grid", "parameters": {"a": {"distribution": "poisson"}}}, "unknown distribution"),
    ],
)
def test_schema_violations_are_named(config, message):
    assert any(message in e for e in schema_errors(config)), schema_errors(config)


def test_schema_accepts_every_documented_form():
    config = {
        "name": "n", "description": "d", "project": "p", "entity": "e", "program": "train.py", "method": "bayes",
        "metric": {"name": "test/mean_acc", "goal": "maximize"}, "run_cap": 4, "command": COMMAND,
        "early_terminate": {"type": "hyperband", "min_iter": 3},
        "parameters": {
            "a": {"values": [1, 2]}, "b": {"value": "x"}, "c": {"min": 1, "max": 3}, "d": {"min": 0.1, "max": 1.0},
            "e": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3}, "f": {"distribution": "normal"},
            "g": {"values": [1, 2], "probabilities": [0.5, 0.5]}, "h": {"parameters": {"i": {"value": 1}}},
        },
    }
    assert schema_errors(config) == []


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"optim": {"parameters": {"lr": {"value": 0.1}}}}, "use a dotted name"),
        ({"lr": {"min": 0.1, "max": 1.0}}, "uniform is not a list of values"),
        ({"lr": {"values": [1, 2], "probabilities": [0.5, 0.5]}}, "categorical_w_probabilities"),
    ],
)
def test_grid_refuses_what_would_not_render_as_overrides(parameters, message):
    with pytest.raises(SweepError, match=message):
        grid(sweep(**parameters))


def test_only_grids_are_enumerated():
    with pytest.raises(SweepError, match="not grid"):
        grid({**sweep(a={"value": 1}), "method": "random"})
