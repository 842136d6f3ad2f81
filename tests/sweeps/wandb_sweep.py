"""What the W&B server and agent do with a sweep file, done locally: validate, enumerate, render.

Written from W&B's behaviour as implemented in the open-source `wandb/sweeps` (the server's sweep
logic: `config/schema.json`, `grid_search.py`, `params.py`) and in the `wandb` client 0.31
(`wandb sweep`: `sdk/launch/sweeps/utils.py`; `wandb agent`: `wandb_agent.py`):

- `wandb sweep FILE` reads the file with `yaml.safe_load` (YAML 1.1: `1e-4` without a dot is a
  string, `1.0e-4` a float) and sends it to the server, which checks it against the schema.
- grid: the parameters sorted by name; constants (`value`) fixed; every combination of the
  `values` lists (`itertools.product` in name order, so the last name varies fastest); a
  combination already run (values compared by their YAML dump) is not run again.
- a run's config is `{name: {"value": v}}` in name order; it reaches the agent as JSON (where a
  float with an integral value arrives as an int: the server's own comment in `grid_search.py`).
- the agent replaces each command item that is exactly `${macro}` by that macro's list (an
  unknown macro by nothing), `${envvar:NAME}` inside an item by the variable, `${env}` by
  `/usr/bin/env`, `${interpreter}` by `python`, `${program}` by `program`; each argument of
  `${args_no_hyphens}` is `f"{name}={value}"`, the value as Python prints it (`5e-05`, `True`,
  `None`, `[1, 2]`); the command runs without a shell.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

TOP_LEVEL = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}
STRINGS = {"apiVersion", "description", "program", "job", "image_uri", "entity", "project", "name"}
METHODS = {"bayes", "random", "grid", "custom"}
METRIC_KEYS = {"name", "goal", "target", "impute", "impute_while_running"}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# distribution: (required keys, optional keys), besides `distribution` itself
DISTRIBUTIONS: dict[str, tuple[set[str], set[str]]] = {
    "constant": ({"value"}, set()),
    "categorical": ({"values"}, set()),
    "categorical_w_probabilities": ({"values", "probabilities"}, set()),
    "int_uniform": ({"min", "max"}, set()),
    "uniform": ({"min", "max"}, set()),
    "q_uniform": ({"min", "max"}, {"q"}),
    "log_uniform": ({"min", "max"}, set()),
    "log_uniform_values": ({"min", "max"}, set()),
    "inv_log_uniform": ({"min", "max"}, set()),
    "inv_log_uniform_values": ({"min", "max"}, set()),
    "q_log_uniform": ({"min", "max"}, {"q"}),
    "q_log_uniform_values": ({"min", "max"}, {"q"}),
    "normal": (set(), {"mu", "sigma"}),
    "q_normal": (set(), {"mu", "sigma", "q"}),
    "log_normal": (set(), {"mu", "sigma"}),
    "q_log_normal": (set(), {"mu", "sigma", "q"}),
    "beta": (set(), {"a", "b"}),
    "q_beta": (set(), {"a", "b", "q"}),
}
GRID = {"constant", "categorical"}  # what a grid enumerates here (W&B also expands int_uniform, q_uniform)
AGENT_MACROS = {"env": ["/usr/bin/env"], "interpreter": ["python"]}
ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")


class SweepError(ValueError):
    pass


def load(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def distribution(param: dict) -> str:
    """The parameter's distribution, given or inferred as W&B does from its keys."""
    if "distribution" in param:
        return param["distribution"]
    if "value" in param:
        return "constant"
    if "values" in param:
        return "categorical_w_probabilities" if "probabilities" in param else "categorical"
    if all(isinstance(param.get(k), int) and not isinstance(param.get(k), bool) for k in ("min", "max")):
        return "int_uniform"
    return "uniform"


def _parameter_errors(name: str, param) -> list[str]:
    if not isinstance(name, str) or not NAME.match(name):
        return [f"parameter name {name!r} does not match {NAME.pattern}"]
    if not isinstance(param, dict):
        return [f"{name}: a parameter is a mapping, got {param!r}"]
    if "parameters" in param:
        if set(param) != {"parameters"}:
            return [f"{name}: a nested parameter has only `parameters`, got {sorted(param)}"]
        return _parameters_errors(param["parameters"], f"{name}.")
    kind = distribution(param)
    if kind not in DISTRIBUTIONS:
        return [f"{name}: unknown distribution {kind!r}"]
    required, optional = DISTRIBUTIONS[kind]
    errors = [f"{name}: {kind} needs `{k}`" for k in sorted(required - set(param))]
    errors += [f"{name}: {kind} takes no `{k}`" for k in sorted(set(param) - required - optional - {"distribution"})]
    if "values" in param and not (isinstance(param["values"], list) and param["values"]):
        errors.append(f"{name}: `values` is a non-empty list")
    for key in ({"min", "max", "q", "mu", "sigma", "a", "b"} & set(param)):
        if not _number(param[key]):
            errors.append(f"{name}: `{key}` is a number, got {param[key]!r}")
    if kind == "int_uniform" and not all(isinstance(param.get(k), int) for k in ("min", "max")):
        errors.append(f"{name}: int_uniform takes integer bounds")
    return errors


def _parameters_errors(parameters, prefix: str = "") -> list[str]:
    if not isinstance(parameters, dict) or not parameters:
        return [f"{prefix or 'parameters'}: a non-empty mapping of parameters"]
    return [e for name, p in parameters.items() for e in _parameter_errors(f"{prefix}{name}" if prefix else name, p)]


def schema_errors(sweep) -> list[str]:
    """Every way the sweep breaks W&B's sweep config schema (empty when valid)."""
    if not isinstance(sweep, dict):
        return ["a sweep config is a mapping"]
    errors = [f"unknown top-level key {k!r}" for k in sorted(set(sweep) - TOP_LEVEL)]
    if "method" not in sweep:
        errors.append("`method` is required")
    elif sweep["method"] not in METHODS:
        errors.append(f"method {sweep['method']!r} is not one of {sorted(METHODS)}")
    errors += [f"`{k}` is a string" for k in sorted(STRINGS & set(sweep)) if not isinstance(sweep[k], str)]
    if "kind" in sweep and sweep["kind"] != "sweep":
        errors.append("`kind` can only be `sweep`")
    if "run_cap" in sweep and not (isinstance(sweep["run_cap"], int) and sweep["run_cap"] > 0):
        errors.append("`run_cap` is an integer > 0")
    if "command" in sweep and not isinstance(sweep["command"], list):
        errors.append("`command` is a list")
    metric = sweep.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            errors.append("`metric` is a mapping with a string `name`")
        else:
            errors += [f"metric takes no `{k}`" for k in sorted(set(metric) - METRIC_KEYS)]
            if metric.get("goal", "minimize") not in ("minimize", "maximize"):
                errors.append(f"metric goal {metric['goal']!r} is not minimize or maximize")
    if "parameters" in sweep:
        errors += _parameters_errors(sweep["parameters"])
    return errors


def validate_grid(sweep) -> None:
    """Schema-valid, a grid, and made of parameters that render as `name=value` overrides."""
    errors = schema_errors(sweep)
    if not errors:
        if sweep["method"] != "grid":
            errors.append(f"method is {sweep['method']!r}, not grid")
        for name, param in sweep.get("parameters", {}).items():
            if "parameters" in param:  # the agent would pass a dict: `optim={'lr': 0.001}`
                errors.append(f"{name}: nested parameters render as a Python dict; use a dotted name")
            elif distribution(param) not in GRID:
                errors.append(f"{name}: {distribution(param)} is not a list of values a grid enumerates here")
    if errors:
        raise SweepError("; ".join(errors))


def _dedupe_key(value: Any) -> str:
    return yaml.dump(_on_the_wire(value), default_flow_style=True, sort_keys=True)


def grid(sweep: dict) -> list[dict[str, Any]]:
    """Every run of a grid sweep in the server's order: `{name: value}`, names sorted."""
    validate_grid(sweep)
    params = sorted(sweep["parameters"].items())
    fixed = {name: p["value"] for name, p in params if "value" in p}
    swept = [(name, p["values"]) for name, p in params if "values" in p]
    runs, seen = [], set()
    for combo in itertools.product(*(values for _, values in swept)):
        key = tuple(_dedupe_key(v) for v in combo)
        if key in seen:
            continue
        seen.add(key)
        run = {**fixed, **{name: v for (name, _), v in zip(swept, combo)}}
        runs.append(dict(sorted(run.items())))
    return runs


def _on_the_wire(value: Any) -> Any:
    """A value as the agent receives it: through JSON, an integral float as an int."""
    value = json.loads(json.dumps(value))

    def ints(v):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [ints(x) for x in v]
        if isinstance(v, dict):
            return {k: ints(x) for k, x in v.items()}
        return v

    return ints(value)


def args_no_hyphens(run: dict[str, Any]) -> list[str]:
    return [f"{name}={_on_the_wire(value)}" for name, value in run.items()]


def command(sweep: dict, run: dict[str, Any]) -> list[str]:
    """The argument vector the agent starts for one run."""
    macros = {**AGENT_MACROS, "program": [sweep["program"]], "args_no_hyphens": args_no_hyphens(run)}
    argv = []
    for item in sweep["command"]:
        item = ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(item))
        if item.startswith("${") and item.endswith("}"):
            argv += macros.get(item[2:-1], [])
        else:
            argv.append(item)
    return argv
