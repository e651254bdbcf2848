"""Benchmark: batched greedy generation speed in float32 and in bf16 (autocast on a CPU).

Shows whether bf16 pays on this machine: it does only where the CPU has bf16 in
hardware (AVX512-BF16 or AMX), which is what `dtype: auto` checks. Prints a table.

    .venv/bin/python benchmarks/bench_generation.py --batch 32 --new-tokens 24
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from harness.answer.prompts import TEMPLATES, render
    from harness.models.local import compute_context, load_generator, native_bf16_cpu

    print(f"CPU bf16 in hardware: {native_bf16_cpu()}; torch threads: {torch.get_num_threads()}")
    print("| compute dtype | tokens/s (best of repeats) |")
    print("|---|---|")
    for dtype in ("float32", "bfloat16"):
        lm = load_generator(args.model, dtype=dtype, device="cpu")
        prompts = [
            render(lm.tokenizer, TEMPLATES["closed_book"], question=f"Where was person number {i} born?")
            for i in range(args.batch)
        ]
        enc = lm.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.no_grad(), compute_context(lm):
                lm.model.generate(
                    **enc,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    pad_token_id=lm.tokenizer.pad_token_id,
                )
            best = max(best, args.batch * args.new_tokens / (time.perf_counter() - t0))
        print(f"| {dtype} | {best:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
