"""Finished runs read back from their directories: config, summary and logged metrics.

A run directory holds `config.yaml` (the resolved config), `summary.json` (written at the end) and
`csv/version_<n>/metrics.csv` (one version per invocation: a resumed run adds one).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict

    def get(self, key: str, default=None):
        """A config value by dotted key (`optim.lr`)."""
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def loss(self) -> str:
        """The loss's label (a preset's own name), or its name in runs made before labels existed."""
        return self.get("loss.label") or self.get("loss.name")

    def metrics(self) -> list[dict[str, float]]:
        """Every logged row of every CSV version, in order, with numbers parsed and blanks dropped."""
        rows = []
        files = sorted(self.path.glob("csv/**/metrics.csv"), key=lambda p: (len(p.parts), str(p)))
        for path in files:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
        return rows

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of a metric over the run."""
        return [(int(r["step"]), r[key]) for r in self.metrics() if key in r and "step" in r]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    config_file = path / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{path} is not a run directory: no config.yaml")
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    summary_file = path / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return Run(path, config, summary)


def find_runs(root: str | Path, finished: bool = True) -> list[Run]:
    """Every run under `root` (a run directory, a multirun directory, or a folder of them)."""
    root = Path(root)
    dirs = sorted({p.parent for p in root.glob("**/config.yaml")
                   if (p.parent / "csv").exists() or (p.parent / "summary.json").exists()})
    runs = [load_run(d) for d in dirs]
    return [r for r in runs if r.summary or not finished]
