"""A few seconds' measure of this machine's speed now, for `harness init --measure`.

    rates = measure_rates("smollm2", target_modules=["q_proj", "v_proj"])
    # {"train_tokens_per_second": 96.1, "generate_tokens_per_second": 81.0, "seconds": 9.8, ...}

Generation: one greedy batch of `batch_size` prompts, `new_tokens` each, after an
untimed warm-up batch, the rate counted in the tokens actually generated. Training: LoRA
on the given target modules, `steps` optimiser steps (after one untimed warm-up step) on
`batch_size` sequences of `max_length` tokens, the loss on every token. The probe is small
(2 x 64 tokens a step), so its rate is if anything low for a run's larger batches; what a
busy machine measures is what its run will see, which is the point (README's rates are
for a quiet machine).
"""

from __future__ import annotations

import time

import torch


def measure_rates(
    model: str,
    *,
    target_modules: list[str],
    rank: int = 16,
    batch_size: int = 2,
    max_length: int = 64,
    steps: int = 2,
    new_tokens: int = 16,
) -> dict:
    """Training and generation tokens per second of `model` on this machine now."""
    from peft import LoraConfig, get_peft_model

    from harness.models.local import generate, load_generator

    start = time.perf_counter()
    lm = load_generator(model)
    prompts = ["Count from 1 to 100: 1, 2, 3,"] * batch_size  # a continuation that does not stop early
    generate(lm, prompts, max_new_tokens=2, batch_size=batch_size)  # warm-up, untimed
    loaded = time.perf_counter()
    outs = generate(lm, prompts, max_new_tokens=new_tokens, batch_size=batch_size)
    generated = time.perf_counter()
    peft_model = get_peft_model(lm.model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules))
    peft_model.train()
    ids = torch.randint(0, peft_model.config.vocab_size, (batch_size, max_length), device=lm.device)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        peft_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up: allocation and first-call overheads are not the rate
    timed = time.perf_counter()
    for _ in range(steps):
        step()
    trained = time.perf_counter()
    return {
        "model": model,
        "train_tokens_per_second": round(steps * batch_size * max_length / (trained - timed), 1),
        "generate_tokens_per_second": round(max(sum(o.new_tokens for o in outs), 1) / (generated - loaded), 1),
        "load_seconds": round(loaded - start, 1),  # with the warm-up batch
        "seconds": round(trained - start, 1),
    }
