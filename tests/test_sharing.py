"""Exports made for sharing: the LoRA adapter alone beside the merged model, a model card, the hub upload."""

from pathlib import Path

import torch

from dftlab.run import run
from tests.conftest import fast_cfg, tiny_lm


def _tiny_base(tmp_path):
    from dftlab.data.tokenizer import char_tokenizer

    tok = char_tokenizer()
    folder = tmp_path / "base"
    tiny_lm(vocab=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_a_lora_run_exports_the_adapter_and_a_model_card(run_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = _tiny_base(tmp_path)
    summary = run(fast_cfg(run_dir, f"model.name_or_path={base}", "model.lora.r=4", "model.lora.alpha=8",
                           "loss=dft", "loss.min_p=0.05"))
    export = run_dir / "export"
    merged = AutoModelForCausalLM.from_pretrained(export)
    # the adapter alone, on the base, merged, gives the exported weights
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), export / "adapter")
    rebuilt = rebuilt.merge_and_unload()
    initial = AutoModelForCausalLM.from_pretrained(base).state_dict()
    trained = [n for n, p in rebuilt.state_dict().items() if not torch.equal(p, initial[n])]
    assert trained  # the adapter changed something
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(tensor, rebuilt.state_dict()[name], msg=name)
    card = (export / "README.md").read_text()
    assert f"base_model: {base}" in card and "tags: [dftlab, dft, lora]" in card
    assert "Game24Task (the embedded task)" in card
    assert "DFT(alpha=1.0, min_p=0.05" in card and "'min_p': 0.05" in card
    assert "LoRA: r 4, alpha 8" in card and "global batch 16" in card and f"{summary['steps']} steps" in card
    # the run's results table, as printed at the end of the run
    acc = summary["eval"]["finetuned"]["test_id"]["acc"]
    assert "greedy accuracy (%)" in card and "test_id                          4" in card
    assert f"{100 * acc:5.1f}" in card
    assert summary["export"]["model_card"] == str(export / "README.md")


def test_push_to_hub_uploads_the_export_when_a_token_is_set(run_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:  # the hub cannot be reached from the tests: everything up to the upload call is real
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo, **kwargs):
            calls.append(("create_repo", repo, kwargs))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            calls.append(("upload_folder", repo_id, files))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    summary = run(fast_cfg(run_dir, "export.push_to_hub=someone/tiny-dft", "loss=dft"))
    assert calls[0] == ("token", "hf_test_token")
    assert calls[1] == ("create_repo", "someone/tiny-dft", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[2][:2] == ("upload_folder", "someone/tiny-dft")
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(calls[2][2])
    assert summary["export"]["hub"] == "https://huggingface.co/someone/tiny-dft"
    assert "hf_test_token" not in (run_dir / "summary.json").read_text() + (run_dir / "config.yaml").read_text()


def test_push_to_hub_without_a_token_says_how_to_upload_later(run_dir, monkeypatch, caplog):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **k: (_ for _ in ()).throw(AssertionError("no upload")))
    with caplog.at_level("WARNING"):
        summary = run(fast_cfg(run_dir, "export.push_to_hub=someone/x"))
    assert summary["export"]["hub"] is None
    assert "no Hugging Face token" in caplog.text and f"hf upload someone/x {run_dir / 'export'}" in caplog.text
