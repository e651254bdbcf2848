"""LoRA fine-tuning through PEFT.

`build_examples(...)` turns training material into (prompt, completion) pairs:
`cpt` has an empty prompt and the training text as completion (next-token loss on all of
it); `sft` renders each training question with the same closed-book template the
pipelines use and puts the loss on the answer only.

`train_lora(lm, examples, *, rank=..., ...)` wraps `lm.model` in a PEFT LoRA model in
place, trains it with AdamW and a linear warm-up/decay schedule, measures a held-out dev
loss after every epoch (optionally stopping early and keeping the best epoch), saves the
adapter to `out_dir`, and returns the loss curve and the costs.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.models import LoadedModel, compute_context
from harness.prompts import answer_suffix, render, template_for

log = logging.getLogger(__name__)


class PeakMemory:
    """The most resident memory this process held while the block ran, sampled from
    /proc every 50 ms on a thread (the process-lifetime maximum, ru_maxrss, would carry
    an earlier, bigger run's peak into a later one). Elsewhere it falls back to
    ru_maxrss."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float | None:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.rss_mb() or 0.0)

    def __enter__(self) -> "PeakMemory":
        first = self.rss_mb()
        if first is None:
            self._thread = None
        else:
            self.peak_mb = first
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb() or 0.0)


class TrainError(ValueError):
    """Training that cannot start; the message names the config key."""


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


@dataclass
class TrainResult:
    adapter_dir: str
    loss_curve: list[dict]
    best_epoch: int | None
    stopped_early: bool
    steps: int
    train_examples: int
    dev_examples: int
    trainable_params: int
    total_params: int
    tokens: int
    wall_seconds: float
    tokens_per_second: float
    peak_rss_mb: float  # the most resident memory of the process while training (see PeakMemory)
    adapter_bytes: int
    peak_gpu_mb: float | None = None  # CUDA only: the most GPU memory torch held while training
    world_size: int = 1  # processes that trained it together (torchrun / accelerate launch)

    def to_json(self) -> dict:
        return asdict(self)


def build_examples(tokenizer, *, objective: str, texts=(), questions=()) -> list[Example]:
    """Training pairs for `cpt` (texts) or `sft` (questions with answers)."""
    if objective == "cpt":
        return [Example("", t + answer_suffix(tokenizer)) for t in texts if t.strip()]
    return [Example(render(tokenizer, template_for(retrieval=False, task=q.task), question=q.question),
                    q.answers[0] + answer_suffix(tokenizer))
            for q in questions if q.answers]


def _holds(chunk_text: str, q) -> bool:
    text = " ".join(chunk_text.split())
    if q.evidence:
        return " ".join(q.evidence.split()) in text
    return any(a and a in text for a in q.answers)


def build_raft_examples(tokenizer, *, questions, chunks, passages: int, gold_share: float,
                        seed: int) -> list[Example]:
    """RAFT training pairs (Zhang et al. 2024): each training question with `passages`
    chunks in the retrieval prompt. With probability `gold_share` the chunk holding the
    answer (its evidence sentence, else an answer string from the same document) is one
    of them, at a random place; otherwise every chunk is a distractor, so the model also
    learns to answer when retrieval misses. Distractors are drawn at random from chunks
    that do not hold the answer. The completion is the short gold answer (the paper's
    chain-of-thought answers need a teacher model). Questions whose gold chunk cannot be
    found are left out."""
    rng = random.Random(seed)
    template = template_for(retrieval=True)
    out = []
    for q in questions:
        if not q.answers:
            continue
        gold = [c for c in chunks if (q.doc_id is None or c.doc_id == q.doc_id) and _holds(c.text, q)]
        others = [c for c in chunks if not _holds(c.text, q)]
        if not gold or not others:
            continue
        with_gold = rng.random() < gold_share
        picked = rng.sample(others, min(len(others), passages - int(with_gold)))
        if with_gold:
            picked.insert(rng.randrange(len(picked) + 1), gold[0])
        out.append(Example(render(tokenizer, template, question=q.question, passages=[c.text for c in picked]),
                           q.answers[0] + answer_suffix(tokenizer)))
    return out


def split_sizes(n_examples: int, dev_fraction: float) -> tuple[int, int]:
    """(train, dev) sizes: no dev split below 10 examples."""
    n_dev = int(round(n_examples * dev_fraction)) if n_examples >= 10 else 0
    return n_examples - n_dev, n_dev


def planned_steps(n_examples: int, *, dev_fraction: float, batch_size: int, epochs: int,
                  max_steps: int | None) -> int:
    steps = epochs * math.ceil(split_sizes(n_examples, dev_fraction)[0] / batch_size)
    return min(steps, max_steps) if max_steps else steps


def _tokenize(tokenizer, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    prompt = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
    completion = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
    ids = (prompt + completion)[:max_length]
    labels = ([-100] * len(prompt) + completion)[:max_length]
    return ids, labels


def _batches(items, batch_size: int, pad_id: int):
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in chunk])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk])
        yield ids, mask, labels


@torch.no_grad()
def _dev_loss(lm: LoadedModel, items, batch_size: int, pad_id: int) -> float:
    lm.model.eval()
    total, count = 0.0, 0
    for ids, mask, labels in _batches(items, batch_size, pad_id):
        with compute_context(lm):
            loss = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            labels=labels.to(lm.device)).loss
        n = int((labels[:, 1:] != -100).sum())
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


def train_lora(lm: LoadedModel, examples: list[Example], *, rank: int, alpha: float, dropout: float,
               target_modules, lr: float, epochs: int, max_steps: int | None, batch_size: int,
               max_length: int, warmup_ratio: float, dev_fraction: float,
               early_stopping_patience: int | None, seed: int, out_dir: str | Path,
               adapter_name: str = "default", checkpoint_dir: str | Path | None = None,
               checkpoint_every: int = 1, progress=None) -> TrainResult:
    """Train a LoRA adapter on `lm.model` and save it to `out_dir`.

    The first adapter wraps `lm.model` in a PEFT model in place; a later one (another
    seed, say) is added beside the others under `adapter_name` and made the active one,
    and only its weights train.

    With `checkpoint_dir`, the adapter, optimizer, schedule, data order and random
    states are saved there every `checkpoint_every` steps and after every epoch; a call
    that finds a checkpoint continues from it, and the adapter it ends with is the one an
    uninterrupted run gives, bit for bit."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import get_linear_schedule_with_warmup

    if not examples:
        raise TrainError("train: no training examples (is the training data empty?)")
    tok = lm.tokenizer
    items = [_tokenize(tok, ex, max_length) for ex in examples]
    items = [it for it in items if any(lab != -100 for lab in it[1])]
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    n_dev = split_sizes(len(items), dev_fraction)[1]
    dev = [items[i] for i in order[:n_dev]]
    train = [items[i] for i in order[n_dev:]]

    torch.manual_seed(seed)
    if getattr(lm.model, "is_loaded_in_4bit", False):  # QLoRA
        from peft import prepare_model_for_kbit_training

        from harness.models import keep_4bit_trainable

        if not hasattr(lm.model, "peft_config"):
            lm.model = prepare_model_for_kbit_training(lm.model, use_gradient_checkpointing=False)
        keep_4bit_trainable(lm.model)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        task_type="CAUSAL_LM", bias="none")
    try:
        if hasattr(lm.model, "peft_config"):
            lm.model.add_adapter(adapter_name, config)
            lm.model.set_adapter(adapter_name)
            model = lm.model
        else:
            model = get_peft_model(lm.model, config, adapter_name=adapter_name)
    except ValueError as err:
        raise TrainError(f"train.target_modules: {str(err).splitlines()[0]}") from None
    lm.model = model
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name and f".{adapter_name}." in name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    total_steps = planned_steps(len(items), dev_fraction=dev_fraction, batch_size=batch_size, epochs=epochs,
                                max_steps=max_steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    pad_id = tok.pad_token_id

    # Launched as several processes (torchrun, accelerate launch): data parallel through
    # accelerate. Every process sees the same batches and trains on its share of each
    # batch's rows; gradients are averaged; the first process alone writes files.
    accelerator, step_model = None, model
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=lm.device == "cpu")
        step_model, optimizer = accelerator.prepare(model, optimizer)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)

    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    perm = list(range(len(train)))
    st = {"step": 0, "epoch": 1, "batches_done": 0, "epoch_complete": False, "curve": [], "best": float("inf"),
          "best_epoch": None, "bad_epochs": 0, "stopped_early": False, "best_state": None, "tokens": 0,
          "elapsed": 0.0}
    if ckpt is not None and ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        set_peft_model_state_dict(model, saved["adapter"], adapter_name=adapter_name)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng.setstate(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        perm = saved["perm"]
        st = saved["state"]
        log.info("training resumed from %s at step %d", ckpt, st["step"])

    def save_checkpoint() -> None:
        if rank != 0:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name(f".{ckpt.name}.tmp")
        torch.save({"adapter": get_peft_model_state_dict(model, adapter_name=adapter_name),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "perm": perm,
                    "state": {**st, "elapsed": st["elapsed"] + time.perf_counter() - t0}}, tmp)
        os.replace(tmp, ckpt)

    if lm.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if progress is not None and st["step"]:
        progress(st["step"])

    def done(st: dict) -> bool:
        return st["stopped_early"] or (st["epoch_complete"] and (st["step"] >= total_steps or st["epoch"] >= epochs))

    finished = done(st)
    with PeakMemory() as memory:
        while not finished:
            epoch = st["epoch"]
            if st["epoch_complete"]:
                st.update(epoch=epoch + 1, batches_done=0, epoch_complete=False)
                epoch += 1
            if st["batches_done"] == 0:
                rng.shuffle(perm)
            model.train()
            batches = list(_batches([train[i] for i in perm], batch_size, pad_id))
            for ids, mask, labels in batches[st["batches_done"]:]:
                if world > 1:  # this process's rows of the batch (a repeat when there are fewer rows)
                    rows = list(range(rank, ids.shape[0], world)) or [rank % ids.shape[0]]
                    ids, mask, labels = ids[rows], mask[rows], labels[rows]
                with compute_context(lm):
                    loss = step_model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                      labels=labels.to(lm.device)).loss
                if accelerator is not None:
                    accelerator.backward(loss)
                else:
                    loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                st["step"] += 1
                st["batches_done"] += 1
                st["tokens"] += int(mask.sum())
                st["curve"].append({"step": st["step"], "epoch": epoch, "train_loss": float(loss.detach())})
                if progress is not None:
                    progress(1)
                if st["step"] >= total_steps:
                    break
                if ckpt is not None and st["step"] % checkpoint_every == 0:
                    save_checkpoint()
            if dev:
                dev_loss = _dev_loss(lm, dev, batch_size, pad_id)
                st["curve"].append({"step": st["step"], "epoch": epoch, "dev_loss": dev_loss})
                log.info("epoch %d: dev loss %.4f", epoch, dev_loss)
                if dev_loss < st["best"] - 1e-6:
                    st.update(best=dev_loss, best_epoch=epoch, bad_epochs=0)
                    if early_stopping_patience:
                        st["best_state"] = {k: v.detach().clone()
                                            for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
                else:
                    st["bad_epochs"] += 1
                    if early_stopping_patience and st["bad_epochs"] >= early_stopping_patience:
                        st["stopped_early"] = True
            st["epoch_complete"] = True
            finished = done(st)
            if ckpt is not None:
                save_checkpoint()
    curve, best_epoch, stopped_early, step, tokens = (st["curve"], st["best_epoch"], st["stopped_early"], st["step"],
                                                      st["tokens"])
    best_state = st["best_state"]
    wall = st["elapsed"] + time.perf_counter() - t0
    if best_state is not None:
        set_peft_model_state_dict(model, best_state, adapter_name=adapter_name)
    model.eval()
    out_dir = Path(out_dir)
    adapter_bytes = 0
    if rank == 0:
        model.save_pretrained(out_dir, selected_adapters=[adapter_name])
        if (out_dir / adapter_name).is_dir():  # PEFT puts a non-default adapter in a subfolder
            for f in (out_dir / adapter_name).iterdir():
                f.rename(out_dir / f.name)
            (out_dir / adapter_name).rmdir()
        adapter_bytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return TrainResult(
        adapter_dir=str(out_dir), loss_curve=curve, best_epoch=best_epoch, stopped_early=stopped_early,
        steps=step, train_examples=len(train), dev_examples=len(dev), trainable_params=trainable,
        total_params=total, tokens=tokens, wall_seconds=wall, tokens_per_second=tokens / max(wall, 1e-9),
        peak_rss_mb=memory.peak_mb, adapter_bytes=adapter_bytes,
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if lm.device == "cuda" else None, world_size=world,
    )
