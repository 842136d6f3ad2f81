"""One step-time measurement in this process; prints one JSON line (see workload.py).

    python bench/step_worker.py dftlab --workdir W --steps 30 --warmup 5 [--packing] [--loss dft]
    python bench/step_worker.py trl    --workdir W --steps 30 --warmup 5 [--packing] [--loss dft]
    python bench/step_worker.py plain  --workdir W --steps 30 --warmup 5 [--loss dft]
    python bench/step_worker.py trl    --workdir W --device cuda --bf16 --loss sft

Every system trains the model saved in W/model (the workload of W: see workload.py), from the same
initial weights, with AdamW at a constant learning rate, gradient clipping at 1.0, the global batch
of dftlab's data config, with the DFT loss or SFT (`--loss`; TRL's `loss_type` "dft" or "nll"), in
fp32 on the CPU unless told otherwise (dftlab: `--override trainer=gpu`; TRL: `--device cuda
--bf16`). A step's time runs from the end of one optimizer step to the end of the next (the GPU
synchronised), so data loading and everything a framework does between steps count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

IGNORE = -100
TRL_LOSS = {"dft": "dft", "sft": "nll"}  # dftlab's loss choice -> TRL's loss_type


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Steps:
    """Step end times and the token counts of each step's batch; with `profile`, a torch.profiler
    trace of the timed steps (started when the warm-up ends)."""

    def __init__(self, warmup: int, profile: bool = False):
        self.ends, self.tokens, self.targets, self.positions = [], [], [], []
        self.warmup, self.profiler = warmup, None
        if profile:
            import torch

            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def end(self, now: float | None = None) -> None:
        _sync()  # a step ends when its GPU work does
        self.ends.append(time.perf_counter() if now is None else now)
        if self.profiler is not None and len(self.ends) == self.warmup:
            self.profiler.__enter__()

    def batch(self, tokens: int, targets: int, positions: int) -> None:
        self.tokens.append(int(tokens))
        self.targets.append(int(targets))
        self.positions.append(int(positions))

    def result(self, warmup: int) -> dict:
        profile = None
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            profile = workload.op_shares(self.profiler.key_averages())
        seconds = [b - a for a, b in zip(self.ends[warmup - 1 :], self.ends[warmup:])]
        n = len(seconds)
        out = {"step_seconds": seconds, "tokens": self.tokens[warmup : warmup + n],
               "targets": self.targets[warmup : warmup + n], "positions": self.positions[warmup : warmup + n],
               "peak_rss": workload.peak_rss(), "profile": profile}
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_gpu"] = torch.cuda.max_memory_allocated()
        return out


def dftlab_config(args, extra: list[str] = ()):
    return workload.compose([
        *workload.overrides(args.workdir), f"loss={args.loss}",
        f"trainer.max_steps={args.warmup + args.steps}", "trainer.max_epochs=-1", f"data.packing={args.packing}",
        f"optim.lr={workload.learning_rate(args.workdir)}",
        f"paths.output_dir={Path(args.workdir) / 'runs' / 'dftlab'}", *args.override, *extra,
    ])


def run_dftlab(args) -> Steps:
    import lightning as L

    from dftlab.run import setup

    steps = Steps(args.warmup, args.profile)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            steps.batch(batch["attention_mask"].sum(), (batch["labels"] != IGNORE).sum(), batch["input_ids"].numel())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.end()

    s = setup(dftlab_config(args), extra_callbacks=[Timer()])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    return steps


def _dataset(args):
    """dftlab's encoded training set and its data module (for batches and the tokenizer)."""
    from dftlab.config import instantiate
    from dftlab.models import load_tokenizer

    cfg = dftlab_config(args)
    tokenizer = load_tokenizer(cfg.model)
    dm = instantiate(cfg.data, tokenizer=tokenizer)
    dm.setup("fit")
    return dm, cfg


def _plain_batches(loader):
    while True:  # epoch after epoch, as the frameworks do under max_steps
        yield from loader


def run_plain(args) -> Steps:
    """The floor: the model, AdamW and the loss (DFT, or SFT) on dftlab's batches, no framework."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM

    dm, cfg = _dataset(args)
    loader = DataLoader(dm.datasets["train"], batch_sampler=dm._sampler("train", dm.batch_size, shuffle=True),
                        collate_fn=dm.collate_fn)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.workdir + "/model", dtype=torch.float32,
                                                 attn_implementation="sdpa").train()
    opt = torch.optim.AdamW(model.parameters(), lr=workload.learning_rate(args.workdir), betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)
    steps = Steps(args.warmup, args.profile)
    for i, batch in enumerate(_plain_batches(loader)):
        if i == args.warmup + args.steps:
            break
        mask = batch["labels"] != IGNORE
        steps.batch(batch["attention_mask"].sum(), mask.sum(), batch["input_ids"].numel())
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}
        if "position_ids" in batch:
            inputs["position_ids"] = batch["position_ids"]
        logp = model(**inputs).logits[mask].float().log_softmax(-1)
        logp = logp.gather(1, batch["labels"][mask][:, None]).squeeze(1)
        weight = logp.exp().detach() if args.loss == "dft" else 1.0
        loss = -(weight * logp).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.end()
    return steps


def run_trl(args) -> Steps:
    """TRL's SFTTrainer with loss_type="dft" (or "nll" for SFT) on the same encoded examples (labels
    -100 on the prompt); `padding_free` with --packing (TRL then puts the whole batch in one row)."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    dm, cfg = _dataset(args)
    rows = [{"input_ids": e.input_ids, "labels": [IGNORE] * e.prompt_len + e.input_ids[e.prompt_len :]}
            for e in dm.datasets["train"].rows]
    steps = Steps(args.warmup, args.profile)

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            steps.end()

    def counted(collator):
        def collate(features):
            batch = collator(features)
            tokens = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
            steps.batch(tokens, (batch["labels"] != IGNORE).sum(), batch["input_ids"].numel())
            return batch
        return collate

    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "runs" / "trl"), loss_type=TRL_LOSS[args.loss], padding_free=args.packing,
        max_length=None,  # the examples are already cut to dftlab's max_length
        per_device_train_batch_size=dm.batch_size, gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps, learning_rate=workload.learning_rate(args.workdir),
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=cfg.optim.weight_decay, max_grad_norm=1.0,
        use_cpu=args.device == "cpu", bf16=args.bf16, fp16=False,
        gradient_checkpointing=False,  # TRL's default is on: the others recompute nothing, so neither does TRL
        save_strategy="no", report_to="none", logging_steps=10, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(
        args.workdir + "/model", dtype=torch.float32, attn_implementation="sdpa"
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=dm.tokenizer, callbacks=[Timer()])
    trainer.data_collator = counted(trainer.data_collator)
    trainer.train()
    return steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["dftlab", "trl", "plain"])
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--packing", action="store_true")
    p.add_argument("--loss", default="dft", help="dftlab's loss choice; TRL and plain: dft or sft")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="TRL's device")
    p.add_argument("--bf16", action="store_true", help="TRL: bf16 autocast (dftlab: --override trainer=gpu)")
    p.add_argument("--profile", action="store_true", help="torch.profiler over the timed steps")
    p.add_argument("--override", nargs="*", default=[], help="more dftlab overrides (data.batch_size=...)")
    args = p.parse_args()
    if args.system != "dftlab" and args.loss not in TRL_LOSS:
        p.error(f"{args.system} trains dft or sft, not {args.loss}")
    steps = {"dftlab": run_dftlab, "trl": run_trl, "plain": run_plain}[args.system](args)
    print(json.dumps(steps.result(args.warmup)))


if __name__ == "__main__":
    main()
