"""The GPU check: every figure to one CSV, within 8 minutes on one H100 or H200.

1. The loss alone at batch 4 x 2048, vocabulary 151,936, hidden 1536 (Qwen2.5-1.5B's head), bf16
   hidden states and head: dftlab's chunked engine against Liger-Kernel's fused linear
   cross-entropy (`use_token_scaling=True` is its fused DFT; fp32 gradient accumulation as
   dftlab's) and the naive engine, SFT and DFT: peak GPU memory above the inputs, and time of a
   forward and backward (median of 5 after 2 warm-ups, cases alternating); the loss value and
   hidden-state gradient of Liger against the chunked engine's.
2. The chunked and naive engines' error against an fp32 reference (fp32 logits and log-softmax,
   TF32 off) at 2048 tokens of the same head: under bf16 autocast with fp32 weights (what
   `trainer=gpu` computes) and with bf16 weights (`trainer=fsdp`'s bf16 parameters).
3. Training throughput of Qwen2.5-1.5B and Qwen2.5-0.5B architectures (built from their configs,
   random weights, saved once), sequence 2048 (rows of the repository's text, a character
   tokenizer: the ids are small, the vocabulary is the model's 151,936), bf16: dftlab `trainer=gpu`,
   dftlab `trainer=fsdp` on 1 device, TRL's SFTTrainer (`loss_type="dft"`, "nll" for SFT), each in
   a fresh process (bench/step_worker.py), SFT and DFT; tokens/s, peak GPU memory and MFU
   (6 N + 12 L H S FLOPs per token, N the parameters of every matrix product, the output head
   included; against the chip's dense bf16 peak).

Runs are ordered by importance and skipped, with a row saying so, once `--budget-s` is spent.

    python bench/gpu/prepare.py      # here: the wheels the GPU machine lacks, into bench/gpu/wheels/
    bash bench/gpu/run.sh            # there: install them, run this; the CSV lands in $OUT (or logs/bench)
    python bench/gpu/check.py --dry-run     # every code path on tiny shapes, on the CPU
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import string
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import workload  # noqa: E402

QWEN = dict(model_type="qwen2", vocab_size=151_936, tie_word_embeddings=True, max_position_embeddings=32_768,
            rms_norm_eps=1e-6)
ARCHS = {  # the published Qwen2.5 configs' shapes
    "qwen2.5-1.5b": dict(QWEN, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2),
    "qwen2.5-0.5b": dict(QWEN, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2),
}
TINY = dict(QWEN, vocab_size=1024, max_position_embeddings=256, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
BATCH = {"qwen2.5-1.5b": 4, "qwen2.5-0.5b": 8, "tiny": 2}
SYSTEMS = [("dftlab", "gpu"), ("trl", None), ("dftlab", "fsdp")]
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 of the SXM parts, FLOP/s
LR = 1e-5


class Check:
    def __init__(self, args):
        import torch

        self.args, self.rows, self.start = args, [], time.perf_counter()
        self.cuda = torch.cuda.is_available() and not args.dry_run
        self.device = "cuda" if self.cuda else "cpu"
        self.name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
            (v for k, v in PEAK_BF16.items() if k in self.name), None)
        if self.peak is None and args.dry_run:
            self.peak = 1e12  # a nominal 1 TFLOP/s, so that the dry run computes an MFU too

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def add(self, **row) -> None:
        self.rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


# --- environment --------------------------------------------------------------------------

def environment(c: Check) -> None:
    import torch

    c.add(part="env", case="device", value=c.name, status=f"torch {torch.__version__}, cuda {torch.version.cuda}")
    c.add(part="env", case="peak bf16 FLOP/s (for MFU)", value=c.peak or "", status="ok" if c.peak else
          "unknown chip: no MFU (give --peak-tflops)")
    for pkg in ("transformers", "lightning", "trl", "datasets", "pyarrow", "liger-kernel", "triton", "hydra-core"):
        try:
            c.add(part="env", case=pkg, value=importlib.metadata.version(pkg), status="ok")
        except importlib.metadata.PackageNotFoundError:
            c.add(part="env", case=pkg, value="", status="absent")
    try:
        c.add(part="env", case="vllm", value=importlib.metadata.version("vllm"), status="ok")
    except importlib.metadata.PackageNotFoundError:
        c.add(part="env", case="vllm", value="", status="absent: not needed here (generation falls back to "
              "Hugging Face generate; eval.backend=auto picks vLLM only when installed)")


# --- 1. the loss engines against Liger ----------------------------------------------------

def liger_loss(cuda: bool):
    """Liger's fused linear cross-entropy class, or the reason it cannot run here."""
    if not cuda:
        return None, "skipped: Liger-Kernel's fused linear cross-entropy needs a CUDA GPU (Triton kernels)"
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception as e:  # noqa: BLE001 - any import failure is a reason to skip, reported as such
        return None, f"skipped: liger_kernel does not import ({type(e).__name__}: {e})"
    return LigerFusedLinearCrossEntropyLoss, ""


def _inputs(n, vocab, hidden, dtype, device, seed=0):
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    h = torch.randn(n, hidden, generator=g).to(device, dtype)
    w = (torch.randn(vocab, hidden, generator=g) * (3 * hidden**-0.5)).to(device, dtype)
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    return h, w, targets


def _run_loss(engine: str, loss_name: str, h, w, targets, liger_cls=None):
    """One forward and backward; returns (loss, grad of h)."""
    import torch

    from dftlab.engine import Head, chunk_rows_for, chunked_token_loss, naive_token_loss
    from dftlab.losses import TokenContext, build_loss

    h = h.detach().requires_grad_()
    w = w.detach().requires_grad_()
    n = h.shape[0]
    if engine == "liger":
        value = liger_cls(use_token_scaling=loss_name == "dft", accum_dtype=torch.float32)(w, h, targets)
    else:
        loss = build_loss(loss_name)
        ctx = TokenContext(torch.zeros(n, dtype=torch.long, device=h.device), 1)
        if engine == "chunked":
            value, _ = chunked_token_loss(h, Head(w), targets, loss, ctx, float(n), chunk_rows_for(w.shape[0], 64))
        else:
            value, _ = naive_token_loss(h @ w.t(), targets, loss, ctx, float(n))
    value.backward()
    return value.detach().float(), h.grad.float()


def engines(c: Check) -> None:
    import torch

    n, vocab, hidden = (128, 1024, 64) if c.args.dry_run else (4 * 2048, 151_936, 1536)
    liger_cls, why = liger_loss(c.cuda)
    if liger_cls is None:
        print(f"liger: {why}", flush=True)
    cases = [(e, loss) for loss in ("sft", "dft") for e in ("chunked", "liger", "naive")]
    h, w, targets = _inputs(n, vocab, hidden, torch.bfloat16, c.device)
    times = {k: [] for k in cases}
    memory, values = {}, {}
    warmup, reps = (1, 2) if c.args.dry_run else (2, 5)
    for rep in range(warmup + reps):
        for engine, loss in cases:
            if engine == "liger" and liger_cls is None:
                continue
            if c.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            value, grad_h = _run_loss(engine, loss, h, w, targets, liger_cls)
            if c.cuda:
                torch.cuda.synchronize()
                memory[engine, loss] = (torch.cuda.max_memory_allocated() - base) / 2**30
            if rep >= warmup:
                times[engine, loss].append(time.perf_counter() - t0)
            values[engine, loss] = (value, grad_h)
            del value, grad_h
    shape = f"{n} x {vocab} x {hidden}"
    for engine, loss in cases:
        if engine == "liger" and liger_cls is None:
            c.add(part="loss", case=engine, loss=loss, shape=shape, status=why)
            continue
        c.add(part="loss", case=engine, loss=loss, shape=shape, seconds=statistics.median(times[engine, loss]),
              peak_gib=memory.get((engine, loss), ""), status="ok" if c.cuda else "cpu: time only")
    for loss in ("sft", "dft"):
        if liger_cls is None:
            continue
        ch, li = values["chunked", loss], values["liger", loss]
        c.add(part="loss_agreement", case="liger vs chunked", loss=loss, shape=shape,
              loss_rel_err=float((li[0] - ch[0]).abs() / ch[0].abs()),
              grad_h_rel_err=float((li[1] - ch[1]).norm() / ch[1].norm()), status="ok")
        for what in ("seconds", "peak_gib"):
            a = next(r for r in c.rows if r.get("part") == "loss" and r["case"] == "chunked" and r["loss"] == loss)
            b = next(r for r in c.rows if r.get("part") == "loss" and r["case"] == "liger" and r["loss"] == loss)
            if a.get(what) not in ("", None) and b.get(what) not in ("", None):
                c.add(part="loss_ratio", case=f"chunked / liger {what}", loss=loss, shape=shape,
                      value=a[what] / b[what], status="goal <= " + ("1.2" if what == "seconds" else "1.1"))


# --- 2. error against an fp32 reference ---------------------------------------------------

def errors(c: Check) -> None:
    import torch

    from dftlab.engine import Head, chunk_rows_for, chunked_token_loss, naive_token_loss
    from dftlab.losses import TokenContext, build_loss

    torch.backends.cuda.matmul.allow_tf32 = False
    n, vocab, hidden = (128, 1024, 64) if c.args.dry_run else (2048, 151_936, 1536)
    h32, w32, targets = _inputs(n, vocab, hidden, torch.float32, c.device, seed=1)
    with torch.no_grad():  # half the targets the argmax, as for a trained model, half anything
        top = (h32 @ w32.t()).argmax(-1)
        targets = torch.where(torch.arange(n, device=c.device) % 2 == 0, top, targets)
    rows = chunk_rows_for(vocab, 64)

    def run(loss_name, engine, h, w, autocast):
        h = h.detach().requires_grad_()
        w = w.detach().requires_grad_()
        ctx = TokenContext(torch.zeros(n, dtype=torch.long, device=c.device), 1)
        loss = build_loss(loss_name)
        with torch.autocast(c.device, dtype=torch.bfloat16, enabled=autocast):
            if engine == "chunked":
                value, stats = chunked_token_loss(h, Head(w), targets, loss, ctx, float(n), rows)
            else:
                value, stats = naive_token_loss(h @ w.t(), targets, loss, ctx, float(n))
        value.backward()
        return value.detach().double(), stats.logp.double(), h.grad.double(), w.grad.double()

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp(min=1e-30))

    for loss_name in ("sft", "dft"):
        ref = run(loss_name, "naive", h32, w32, False)
        for engine, case, h, w, autocast in [
            ("chunked", "autocast bf16, fp32 weights (trainer=gpu)", h32.bfloat16(), w32, True),
            ("naive", "autocast bf16, fp32 weights (trainer=gpu)", h32.bfloat16(), w32, True),
            ("chunked", "bf16 weights (trainer=fsdp)", h32.bfloat16(), w32.bfloat16(), False),
            ("naive", "bf16 weights (trainer=fsdp)", h32.bfloat16(), w32.bfloat16(), False),
        ]:
            got = run(loss_name, engine, h, w, autocast)
            c.add(part="error", case=f"{engine}: {case}", loss=loss_name, shape=f"{n} x {vocab} x {hidden}",
                  loss_rel_err=float((got[0] - ref[0]).abs() / ref[0].abs()),
                  logp_max_abs_err=float((got[1] - ref[1]).abs().max()),
                  grad_h_rel_err=rel(got[2], ref[2]), grad_w_rel_err=rel(got[3], ref[3]), status="ok")


# --- 3. training throughput ---------------------------------------------------------------

def prepare_model(c: Check, name: str, arch: dict, seq: int, batch: int) -> tuple[Path, dict]:
    """The architecture with random weights (seed 0) and the text rows, saved once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dftlab.data.tokenizer import char_tokenizer

    workdir = Path(c.args.workdir) / name
    tokenizer = char_tokenizer(string.printable)
    config = AutoConfig.for_model(**arch, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    if not (workdir / "workload.json").is_file():
        torch.manual_seed(0)
        with torch.device(c.device):
            lm = AutoModelForCausalLM.from_config(config)
        workload.prepare_text(workdir, lm, tokenizer, batch, seq, LR)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in meta.parameters())
    matmul = n - (0 if config.tie_word_embeddings else config.vocab_size * config.hidden_size)
    flops = 6 * matmul + 12 * config.num_hidden_layers * config.hidden_size * seq
    return workdir, {"params": n, "flops_per_token": flops}


def throughput(c: Check) -> None:
    seq = 64 if c.args.dry_run else 2048
    warmup, steps = (1, 2) if c.args.dry_run else (3, 10)
    models = {"tiny": TINY} if c.args.dry_run else ARCHS
    for name, arch in models.items():
        if c.left() < 60:
            c.add(part="throughput", model=name, status="skipped: time budget spent")
            continue
        workdir, shape = prepare_model(c, name, arch, seq, BATCH[name])
        ns = SimpleNamespace(workdir=str(workdir), steps=steps, warmup=warmup)
        for system, trainer in SYSTEMS:
            for loss in ("dft", "sft"):
                label = system if trainer is None else f"{system} trainer={trainer}"
                row = dict(part="throughput", model=name, case=label, loss=loss, shape=f"{BATCH[name]} x {seq}")
                if c.left() < 30:
                    c.add(**row, status="skipped: time budget spent")
                    continue
                extra = ["--loss", loss]
                if system == "trl":
                    extra += ["--bf16", "--device", c.device]
                else:
                    extra += ["--override", f"trainer={trainer}"]
                    if trainer == "fsdp":
                        extra += ["trainer.devices=1"]
                    if not c.cuda:  # the dry run: the same paths on the CPU (FSDP2 in fp32 over gloo)
                        extra += ["trainer.accelerator=cpu"]
                        extra += ["trainer.strategy.param_dtype=null"] if trainer == "fsdp" else []
                try:
                    r = workload.summarise(workload.run_worker(system, ns, *extra, timeout=min(240, c.left())))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    c.add(**row, status=f"failed: {str(e).strip().splitlines()[-1][:300]}")
                    continue
                mfu = r["tokens_per_s"] * shape["flops_per_token"] / c.peak if c.peak else ""
                c.add(**row, seconds=r["s_per_step"], tokens_per_s=r["tokens_per_s"], mfu=mfu,
                      peak_gib=r.get("peak_gpu_mib", 0) / 1024 or "", params=shape["params"],
                      pad_per_step=r["padded_per_step"], status="ok")
        for loss in ("dft", "sft"):
            got = {r["case"]: r for r in c.rows if r.get("part") == "throughput" and r.get("model") == name
                   and r.get("loss") == loss and r.get("status") == "ok"}
            for label in ("dftlab trainer=gpu", "dftlab trainer=fsdp"):
                if label in got and "trl" in got:
                    c.add(part="throughput_ratio", model=name, case=f"tokens/s {label} / TRL", loss=loss,
                          value=got[label]["tokens_per_s"] / got["trl"]["tokens_per_s"], status="goal >= 1.2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: every code path, no figure")
    p.add_argument("--out", default=str(workload.ROOT / "logs" / "bench" / "gpu_check.csv"))
    p.add_argument("--workdir", default="/tmp/dftlab-gpu-check", help="the saved models and their text rows")
    p.add_argument("--budget-s", type=float, default=450, help="no new run starts after this many seconds")
    p.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak (default: H100/H200 989)")
    p.add_argument("--parts", nargs="+", default=["env", "loss", "error", "throughput"])
    args = p.parse_args()
    c = Check(args)
    print(f"device: {c.name}; budget {args.budget_s:.0f} s", flush=True)
    for part, fn in (("env", environment), ("loss", engines), ("error", errors), ("throughput", throughput)):
        if part in args.parts:
            fn(c)
            workload.write_csv(args.out, c.rows)  # every figure so far, should a later part fail
    print(f"\n{len(c.rows)} rows in {args.out} after {time.perf_counter() - c.start:.0f} s")


if __name__ == "__main__":
    main()
