"""Benchmark: harness's training against a plain transformers `Trainer` script.

Both train the same LoRA adapter on the same model, the same token windows (the demo
world's documents, restatements and question/answer pairs, `objective: mixed`), the same
batch, steps, learning rate, schedule and precision. Each variant runs in its own
process, so its peak memory is its own. Prints a table: tokens/s, peak memory while
training (resident memory on a CPU, GPU memory on CUDA), final train loss; then harness
with gradient checkpointing, for its memory saving.

    .venv/bin/python benchmarks/bench_train.py                         # a small Llama built here
    .venv/bin/python benchmarks/bench_train.py --model smollm2 --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VARIANTS = ("plain", "harness", "harness+checkpointing")
# each variant runs in its own process, in this order, `--repeats` times; the table keeps
# each variant's fastest run (the machine may be busy with other work) and its memory


def _small_llama(folder: Path, hidden: int) -> str:
    """A 2-layer Llama `hidden` wide with the tests' locally trained tokenizer (no download)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import _tiny_corpus, build_tiny_model

    return str(build_tiny_model(folder, _tiny_corpus(), hidden_size=hidden))


def _material(lm, max_length: int):
    from harness.data.world import generate_world
    from harness.train.material import build_examples, prepare_material

    w = generate_world(seed=0, n_people=10, n_organisations=6, n_places=6, paraphrases=2, n_unanswerable=0)
    examples = build_examples(lm.tokenizer, objective="mixed", texts=w.train_texts, questions=w.train_questions)
    # packed, so that every window is full and activations are what max_length says
    return examples, prepare_material(
        lm.tokenizer, examples, max_length=max_length, dev_fraction=0.0, seed=0, packing=True
    )


def _plain(lm, material, a) -> dict:
    """The script a user would write: PEFT LoRA, Trainer, a padding collator."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from harness.train.trainer import PeakMemory

    torch.manual_seed(0)
    model = get_peft_model(
        lm.model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        ),
    )
    pad = lm.tokenizer.pad_token_id
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in material.train]

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        return {
            "input_ids": torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch]
            ),
            "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch]),
        }

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=a.batch_size,
            max_steps=a.steps,
            learning_rate=1e-3,
            lr_scheduler_type="linear",
            warmup_steps=0,
            optim="adamw_torch",
            max_grad_norm=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
            data_seed=0,
            use_cpu=lm.device == "cpu",
            bf16=lm.dtype == "bfloat16",
            remove_unused_columns=False,
            include_num_input_tokens_seen="non_padding",
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        t0 = time.perf_counter()
        with PeakMemory() as memory:
            trainer.train()
        wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": int(trainer.state.num_input_tokens_seen),
        "seconds": wall,
        "peak_rss_mb": memory.peak_mb,
        "final_loss": losses[-1],
    }


def _harness(lm, examples, a, *, checkpointing: bool) -> dict:
    from harness.train.trainer import train_model

    with tempfile.TemporaryDirectory() as tmp:
        r = train_model(
            lm,
            examples,
            method="lora",
            rank=16,
            alpha=32,
            dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            lr=1e-3,
            epochs=10**6,
            max_steps=a.steps,
            batch_size=a.batch_size,
            max_length=a.max_length,
            warmup_ratio=0.0,
            dev_fraction=0.0,
            seed=0,
            out_dir=Path(tmp) / "adapter",
            gradient_checkpointing=checkpointing,
            packing=True,
        )
    return {
        "tokens": r.tokens,
        "seconds": r.wall_seconds,
        "peak_rss_mb": r.peak_rss_mb,
        "peak_gpu_mb": r.peak_gpu_mb,
        "final_loss": [p["train_loss"] for p in r.loss_curve if "train_loss" in p][-1],
    }


def _one(variant: str, a) -> dict:
    import torch

    from harness.models.local import load_generator
    from harness.train.trainer import PeakMemory

    lm = load_generator(a.model, dtype=a.dtype, device=a.device)
    examples, material = _material(lm, a.max_length)
    start_mb = PeakMemory.rss_mb() or 0.0
    if lm.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = (
        _plain(lm, material, a) if variant == "plain" else _harness(lm, examples, a, checkpointing=variant != "harness")
    )
    if lm.device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    return {
        **out,
        "above_start_mb": out["peak_rss_mb"] - start_mb,
        "weights_mb": weights / 2**20,
        "device": lm.device,
        "dtype": lm.dtype,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a harness model name (default: a small Llama built here)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512, help="width of the small Llama built here")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(_one(a.one, a)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or _small_llama(Path(tmp) / "llama", a.hidden)
        rows = {}
        for variant in [v for _ in range(a.repeats) for v in VARIANTS]:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                variant,
                "--model",
                model,
                "--steps",
                str(a.steps),
                "--batch-size",
                str(a.batch_size),
                "--hidden",
                str(a.hidden),
                "--max-length",
                str(a.max_length),
                "--dtype",
                a.dtype,
                "--device",
                a.device,
            ]
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            if variant not in rows or r["seconds"] < rows[variant]["seconds"]:
                rows[variant] = r
    first = rows["plain"]
    memory = "peak_gpu_mb" if first.get("peak_gpu_mb") else "above_start_mb"
    print(
        f"model {a.model or f'small Llama (2 layers x {a.hidden})'}, {first['device']} {first['dtype']}, weights "
        f"{first['weights_mb']:.1f} MB; {a.steps} steps of batch {a.batch_size}, windows of {a.max_length}; memory: "
        + ("peak GPU memory" if memory == "peak_gpu_mb" else "peak resident memory above the loaded model")
    )
    print("| variant | tokens/s | ratio to plain | memory MB | final train loss |")
    print("|---|---|---|---|---|")
    for variant, r in rows.items():
        tps = r["tokens"] / r["seconds"]
        print(
            f"| {variant} | {tps:,.0f} | {tps / (first['tokens'] / first['seconds']):.2f} | {r[memory]:,.0f} "
            f"| {r['final_loss']:.4f} |"
        )


if __name__ == "__main__":
    main()
