"""An export made ready to share: its model card (`export/README.md`: the base model, the data, the loss and
its parameters, the results, the command) and, with `export.push_to_hub=<repo>`, its upload to the Hugging
Face hub through `huggingface_hub` when a token is set (`HF_TOKEN`, or `hf auth login`).

The export holds the merged model; a LoRA run also has the adapter alone in `export/adapter/`
(`PeftModel.from_pretrained(base, <repo>, subfolder="adapter")`).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dftlab.evaluation.table import format_table

log = logging.getLogger(__name__)


def command() -> str | None:
    """The command line of this run, as a user would type it again (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    prog = Path(sys.argv[0]).name
    prog = prog if prog.startswith("dftlab-") else f"python {prog}"
    overrides = list(HydraConfig.get().overrides.task)
    return " ".join([prog, *(shlex.quote(o) for o in overrides)])


def _data(cfg: DictConfig) -> str:
    task = cfg.data.task
    target = str(task.get("_target_", "?")).rsplit(".", 1)[-1]
    if "path" in task:
        return f"`{task.path}` ({target}, format {task.get('format', 'auto')}, train_on {task.get('train_on', '-')})"
    return f"{target} (the embedded task)"


def model_card(cfg: DictConfig, summary: dict, base_model: str | None, lora: bool, cmd: str | None) -> str:
    run = Path(summary["run_dir"]).name
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    params = {k: v for k, v in loss.items() if k not in ("_target_", "name", "label")}
    o, d = cfg.optim, cfg.data
    lines = [
        "---", "library_name: transformers", *([f"base_model: {base_model}"] if base_model else []),
        f"tags: [dftlab, {summary['label']}{', lora' if lora else ''}]", "---", "",
        f"# {run}", "",
        f"Fine-tuned with dftlab from {f'`{base_model}`' if base_model else 'fresh weights'} with the "
        f"`{summary['label']}` loss.", "",
        "## Training", "",
        f"- base model: {base_model or 'none (fresh weights)'}",
        f"- data: {_data(cfg)}",
        f"- loss: `{summary['loss']}`; parameters: {params or 'none'}",
        f"- optimizer: AdamW, lr {o.lr}, warm-up ratio {o.warmup_ratio}, weight decay {o.weight_decay}, "
        f"global batch {d.batch_size}, max length {d.max_length}, {summary['steps']} steps, seed {cfg.seed}",
    ]
    if lora:
        r = cfg.model.lora
        lines.append(f"- LoRA: r {r.r}, alpha {r.alpha}, dropout {r.dropout}; merged into these weights, the "
                     f"adapter alone is in `adapter/`")
    lines += ["", "## Results", ""]
    if summary.get("val_ce") is not None:
        lines.append(f"Final validation cross-entropy: {summary['val_ce']:.4f}.")
        lines.append("")
    ev = summary.get("eval")
    if ev:
        lines += ["```", format_table({"base": ev.get("base") or {}, summary["label"]: ev["finetuned"]},
                                      "greedy accuracy (%)"), "```"]
        if ev.get("sampled"):
            s = ev["sampled"]
            lines += ["", "```", format_table({"base": s.get("base") or {}, summary["label"]: s["finetuned"]},
                                              f"Average@{s['k']} (%), temperature {s['temperature']:g}, "
                                              f"top_p {s['top_p']:g}"), "```"]
    else:
        lines.append("No test-set evaluation was run.")
    lines += ["", "## Command", "", "```", cmd or "(composed in Python: see config.yaml of the run)", "```", "",
              "The run's full configuration is `config.yaml` in its run directory.", ""]
    return "\n".join(lines)


def push_to_hub(folder: Path, repo: str, private: bool = True) -> str | None:
    """Upload `folder` to the hub model repository `repo` (created if needed); None without a token."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        log.warning("export.push_to_hub=%s: no Hugging Face token (set HF_TOKEN or run `hf auth login`); not "
                    "uploaded. Later: hf upload %s %s", repo, repo, folder)
        return None
    api = HfApi(token=token)
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                      commit_message=f"dftlab export of {folder.parent.name}")
    url = f"https://huggingface.co/{repo}"
    log.info("uploaded %s to %s", folder, url)
    return url


def share(cfg: DictConfig, export: Path, summary: dict, base_model: str | None) -> dict:
    """Write the export's model card, then upload the export when `export.push_to_hub` names a repository."""
    lora = (export / "adapter" / "adapter_config.json").is_file()
    (export / "README.md").write_text(model_card(cfg, summary, base_model, lora, command()))
    out = {"model_card": str(export / "README.md")}
    settings = cfg.get("export") or {}
    if settings.get("push_to_hub"):
        out["hub"] = push_to_hub(export, str(settings.push_to_hub), bool(settings.get("private", True)))
    return out
