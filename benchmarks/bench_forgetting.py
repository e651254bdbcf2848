"""Benchmark: scoring a base model and N adapters on the same MMLU subset, two ways.

- harness: the base is loaded once; each adapter is loaded onto it, made active, scored
  through lm-eval's API on the in-memory model (harness.evaluate.benchmarks.score_tasks), and the
  next one takes its place.
- plain lm_eval: `simple_evaluate(model="hf", model_args={pretrained, peft})` per
  adapter, as users of lm-eval compare adapters today: the base is loaded again each time.

Both score the same task files (seeded subset, same protocol), with the score cache off,
and the script checks they agree. The adapters are random LoRA weights (scoring speed
does not depend on the values). Prints a table; nothing here is a test.

    .venv/bin/python benchmarks/bench_forgetting.py --subjects anatomy astronomy --items 20 --adapters 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def make_adapters(model_dir: Path, n: int, out: Path, *, rank: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft = get_peft_model(
            model,
            LoraConfig(
                r=rank,
                lora_alpha=2 * rank,
                target_modules=["q_proj", "v_proj"],
                init_lora_weights=False,
                task_type="CAUSAL_LM",
            ),
        )
        path = out / f"adapter{i}"
        peft.save_pretrained(path)
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--subjects", nargs="+", default=["anatomy", "astronomy"])
    parser.add_argument("--items", type=int, default=20, help="items per subject")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from peft import PeftModel

    from harness.evaluate import benchmarks
    from harness.models.generator import adapter_switch
    from harness.models.local import cache_dir, load_generator

    work = Path(tempfile.mkdtemp(prefix="bench-forgetting-"))
    # A cold score cache, so every item is scored, sharing the converted models of the real one.
    (work / "cache").mkdir()
    (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
    (work / "cache" / "models").symlink_to(cache_dir() / "models")
    os.environ["HARNESS_CACHE"] = str(work / "cache")
    t0 = time.perf_counter()
    lm = load_generator(args.model, dtype="float32", device="cpu")
    harness_load = time.perf_counter() - t0
    model_dir = Path(lm.source)
    adapters = make_adapters(model_dir, args.adapters, work, rank=16)
    prepared = benchmarks.prepare_tasks(
        data_dir=args.data_dir,
        mmlu_subjects=args.subjects,
        mmlu_items=args.items,
        hellaswag=False,
        hellaswag_items=None,
        seed=1234,
    )
    if not prepared.tasks:
        print(f"no benchmark data in {args.data_dir}: {prepared.skipped}", file=sys.stderr)
        return 2
    n_items = sum(t.n_items for t in prepared.tasks)

    ours, our_calls = {}, []
    t0 = time.perf_counter()
    t1 = time.perf_counter()
    ours["base"] = benchmarks.score_tasks(lm, prepared, adapter_id=None, num_fewshot=0, batch_size=args.batch_size)
    our_calls.append(time.perf_counter() - t1)
    for i, path in enumerate(adapters):
        name = f"adapter{i}"
        t1 = time.perf_counter()
        if i == 0:
            lm.model = PeftModel.from_pretrained(lm.model, path, adapter_name=name)
        else:
            lm.model.load_adapter(path, adapter_name=name)
            lm.model.delete_adapter(f"adapter{i - 1}")
        lm.model.set_adapter(name)
        lm.model.eval()
        with adapter_switch(lm, True):
            ours[name] = benchmarks.score_tasks(
                lm, prepared, adapter_id=name, num_fewshot=0, batch_size=args.batch_size
            )
        our_calls.append(time.perf_counter() - t1)
    harness_s = time.perf_counter() - t0 + harness_load

    manager = TaskManager(include_path=prepared.task_dir, include_defaults=False)
    theirs, their_calls = {}, []
    t0 = time.perf_counter()
    for name, peft in [("base", None)] + [(f"adapter{i}", p) for i, p in enumerate(adapters)]:
        model_args = {"pretrained": str(model_dir), "dtype": "float32"} | ({"peft": str(peft)} if peft else {})
        t1 = time.perf_counter()
        raw = simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=[t.name for t in prepared.tasks],
            num_fewshot=0,
            batch_size=args.batch_size,
            device="cpu",
            task_manager=manager,
            bootstrap_iters=0,
        )["results"]
        their_calls.append(time.perf_counter() - t1)
        theirs[name] = {t.label: raw[t.name]["acc,none"] for t in prepared.tasks}
    plain_s = time.perf_counter() - t0

    agree = all(abs(ours[n][label]["acc"] - theirs[n][label]) < 1e-9 for n in theirs for label in theirs[n])
    scored = n_items * (1 + len(adapters))
    print(
        f"\nMMLU {', '.join(args.subjects)}: {n_items} items x (base + {len(adapters)} adapters) = {scored} "
        f"scorings, 0-shot, model {args.model}, fp32, batch {args.batch_size}, {os.cpu_count()} CPUs"
    )
    print("| method | base loads | wall s | items/s |")
    print("|---|---|---|---|")
    print(f"| harness (one load, adapters swapped) | 1 | {harness_s:.1f} | {scored / harness_s:.2f} |")
    print(f"| plain lm_eval (reload per adapter) | {1 + len(adapters)} | {plain_s:.1f} | {scored / plain_s:.2f} |")
    print(
        f"per call (s), harness: {' '.join(f'{x:.1f}' for x in our_calls)} (+{harness_load:.1f} first load); "
        f"plain: {' '.join(f'{x:.1f}' for x in their_calls)}"
    )
    print(f"accuracies identical between the two: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
