"""The training loop: transformers' `Trainer`, with what harness adds on top.

`train_model(lm, examples, *, method="lora", rank=..., ...)` prepares the material
(train.prepare_material: every document token in some window), makes `lm.model`
trainable (LoRA or QLoRA through PEFT, in place, beside earlier adapters; or every weight
for `method="full"`), and trains it with `Trainer`: AdamW, warm-up then a linear, cosine
or constant schedule, gradient accumulation, gradient clipping, gradient checkpointing,
bf16 autocast where that is the compute dtype, data parallel under torchrun or
`accelerate launch`. On top of `Trainer`, harness adds:

- a dev loss after every epoch, early stopping that keeps the best epoch's weights, and
  the loss curve (one train loss per optimizer step, one dev loss per epoch);
- resume after a kill: with `checkpoint_dir`, a checkpoint every `checkpoint_every`
  optimizer steps and after every epoch's dev loss; a call that finds one resumes from it and
  ends with the weights an uninterrupted run gives, bit for bit on a CPU. Harness's own
  checkpoint files are safetensors and JSON; what `Trainer` writes (optimizer, schedule,
  random states) it reads back with `torch.load(weights_only=True)` only, so nothing in a
  shared cache folder is unpickled. A checkpoint that fails that loading (a planted
  pickle, a damaged file) is discarded with a warning before Trainer sees it, and training
  resumes from the newest sound one, or from the start;
- the costs: tokens, wall time, peak memory (PeakMemory), steps run by this process.

It saves the adapter (or, for `full`, the whole model) to `out_dir` and returns a
TrainResult.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import pickle
import re
import resource
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from harness.models.local import LoadedModel, compute_context
from harness.store.cache import discard
from harness.store.results import atomic_write_file
from harness.train.material import Example, Material, TrainError, prepare_material
from harness.train.methods import METHODS

log = logging.getLogger(__name__)


class PeakMemory:
    """The most resident memory this process held while the block ran, sampled from
    /proc every 50 ms on a thread (the process-lifetime maximum, ru_maxrss, would carry
    an earlier, bigger run's peak into a later one), and what it held when the block
    began: `rise_mb`, their difference, is what the block itself added (training's
    gradients, optimizer states and activations, not the process's libraries, other
    models or caches). Elsewhere it falls back to ru_maxrss, and `rise_mb` is None."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_mb, self.start_mb = interval, 0.0, None
        self.gpu_start_mb: float | None = None  # set by the trainer on CUDA
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

    @staticmethod
    def release_free_heap() -> None:
        """Hand memory that was freed but is still resident back to the OS (glibc's
        malloc_trim), so that the start reads what is live: otherwise a block that
        reuses an earlier run's freed heap shows no rise at all. No-op elsewhere."""
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def __enter__(self) -> "PeakMemory":
        self.release_free_heap()
        first = self.rss_mb()
        if first is None:
            self._thread = None
        else:
            self.peak_mb = self.start_mb = first
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

    @property
    def rise_mb(self) -> float | None:
        return None if self.start_mb is None else self.peak_mb - self.start_mb


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
    method: str = "lora"
    steps_run: int = 0  # optimizer steps this call ran: fewer than `steps` when it resumed a checkpoint
    resumed_from_step: int = 0
    weights_bytes: int = 0  # the base model's weights in memory: the yardstick of training memory
    start_rss_mb: float | None = None  # resident memory when training began (the model loaded)
    # What training needs: the weights plus what memory rose by while training (on a CPU
    # the process's resident memory, peak - start; on a GPU torch's allocations); None
    # when this process ran no step.
    training_memory_mb: float | None = None
    material: dict | None = None  # train.prepare_material's stats: corpus tokens, tokens trained, ...
    settings: dict | None = None  # the trainer settings actually used (batch, accumulation, schedule, ...)

    def to_json(self) -> dict:
        return asdict(self)


WEIGHTS_FILE = "harness-weights.safetensors"  # what a checkpoint folder holds of the model
# What Trainer's resume reads with torch.load(weights_only=True); the random states inside
# transformers' safe_globals (numpy's), as Trainer reads them.
TORCH_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
SCHEDULES = ("linear", "cosine", "constant_with_warmup")


class _Rows(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ids, labels = self.items[i]
        return {"input_ids": ids, "labels": labels}


def _pad(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    width = max(len(ids) for ids, _ in rows)
    return {
        "input_ids": torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in rows]),
        "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
    }


@torch.no_grad()
def _dev_loss(lm: LoadedModel, items, batch_size: int, pad_id: int) -> float:
    """Mean next-token loss over the dev items' labelled tokens."""
    was_training = lm.model.training
    lm.model.eval()
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = {k: v.to(lm.device) for k, v in _pad(items[start : start + batch_size], pad_id).items()}
        with compute_context(lm):
            loss = lm.model(**batch).loss
        n = int((batch["labels"][:, 1:] != -100).sum())
        total, count = total + float(loss) * n, count + n
    lm.model.train(was_training)
    return total / max(count, 1)


def _weights(model, *, full: bool, adapter_name: str) -> dict:
    """The trained weights, as independent CPU tensors (tied weights unshared)."""
    if full:
        state = model.state_dict()
    else:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _set_weights(model, state: dict, *, full: bool, adapter_name: str) -> None:
    if full:
        model.load_state_dict(state)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state, adapter_name=adapter_name)


def _save_safetensors(state: dict, path: Path) -> None:
    """Stream `state` into `path` atomically: no in-memory copy of the file (for full
    fine-tuning that would be the size of the model again, at every checkpoint)."""
    from safetensors.torch import save_file

    atomic_write_file(path, lambda tmp: save_file(state, tmp))


@dataclass
class ResumeState:
    """Harness's own training state, which a checkpoint carries so that a resumed run ends
    where an uninterrupted one would: the loss curve so far, early stopping's best dev
    loss, its epoch and the epochs since without improvement, whether the run stopped
    early, and the training seconds before the checkpoint. Saved as these six JSON fields
    in the checkpoint's trainer_state.json (`stateful_callbacks.Callback.attributes`),
    the format checkpoints had before this class, so those resume as they are."""

    curve: list[dict] = field(default_factory=list)
    best: float = math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    elapsed: float = 0.0


class _Progress:
    """What harness adds to Trainer, as a callback: the loss curve, a dev loss at every
    epoch's end with early stopping that keeps the best epoch, the progress bar, and a
    checkpoint after every epoch's evaluation. Its ResumeState travels in the
    checkpoint's trainer_state.json (JSON); the best epoch's weights in a safetensors
    file beside."""

    def __init__(
        self,
        *,
        lm: LoadedModel,
        dev,
        batch_size: int,
        pad_id: int,
        steps_per_epoch: int,
        patience: int | None,
        best_dir: Path | None,
        full: bool,
        adapter_name: str,
        update,
        is_main: bool,
    ):
        self.lm, self.dev, self.batch_size, self.pad_id = lm, dev, batch_size, pad_id
        self.steps_per_epoch, self.patience, self.best_dir = steps_per_epoch, patience, best_dir
        self.full, self.adapter_name, self.update, self.is_main = full, adapter_name, update, is_main
        self.status, self.best_state = ResumeState(), None
        self.t0 = time.perf_counter()

    def state(self) -> dict:  # transformers' ExportableState: saved in trainer_state.json
        attributes = asdict(self.status)
        attributes["elapsed"] = self.status.elapsed + time.perf_counter() - self.t0
        return {"args": {}, "attributes": attributes}

    def restore(self, attributes: dict) -> None:
        self.status = ResumeState(**attributes)
        if self.patience and self.status.best_epoch is not None:
            from safetensors.torch import load_file

            self.best_state = load_file(str(self.best_dir / f"best-epoch{self.status.best_epoch}.safetensors"))

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs:
            return control
        step = state.global_step
        epoch = math.ceil(step / self.steps_per_epoch)
        self.status.curve.append({"step": step, "epoch": epoch, "train_loss": float(logs["loss"])})
        if self.dev and (step % self.steps_per_epoch == 0 or step >= state.max_steps):
            self._end_epoch(step, epoch, control)
            control.should_save = args.save_strategy != "no"
        if self.update is not None:
            self.update(1)
        return control

    def _end_epoch(self, step: int, epoch: int, control) -> None:
        """The dev loss, and early stopping: keep the best epoch's weights (on disk too,
        for a resume), stop after `patience` epochs without improvement."""
        s = self.status
        dev_loss = _dev_loss(self.lm, self.dev, self.batch_size, self.pad_id)
        s.curve.append({"step": step, "epoch": epoch, "dev_loss": dev_loss})
        log.info("epoch %d: dev loss %.4f", epoch, dev_loss)
        if dev_loss < s.best - 1e-6:
            s.best, s.best_epoch, s.bad_epochs = dev_loss, epoch, 0
            if self.patience:
                self.best_state = _weights(self.lm.model, full=self.full, adapter_name=self.adapter_name)
                if self.best_dir is not None and self.is_main:  # written before the checkpoint naming it
                    _save_safetensors(self.best_state, self.best_dir / f"best-epoch{epoch}.safetensors")
        else:
            s.bad_epochs += 1
            if self.patience and s.bad_epochs >= self.patience:
                s.stopped_early = True
                control.should_training_stop = True


def _callback_class():
    from transformers.trainer_callback import ExportableState, TrainerCallback

    # The class name is the key of its state in trainer_state.json ("Callback"): keep it,
    # or checkpoints written before the change no longer resume.
    class Callback(_Progress, TrainerCallback, ExportableState):
        pass

    return Callback


def _load_error(err: Exception) -> str:
    """What torch.load refused, in a few words: its message goes on to suggest allowlisting
    the global, or weights_only=False, which harness never does."""
    text = str(err)
    found = re.search(r"Unsupported (?:global: GLOBAL \S+|operand \d+)", text)
    if found:
        return found.group(0)
    if isinstance(err, pickle.UnpicklingError):
        return "refused by the weights-only unpickler"
    return (text.splitlines() or [type(err).__name__])[0][:200]


def _checkpoint_problem(folder: Path) -> str | None:
    """Why resuming from `folder` would fail, or None: each file Trainer reads with
    torch.load must load with weights_only=True as Trainer loads it (memory-mapped here,
    so an optimizer state the size of the model is not read twice), and the weights must
    be readable safetensors."""
    from safetensors import SafetensorError, safe_open
    from transformers.trainer_pt_utils import safe_globals

    for path in sorted(p for pattern in TORCH_STATE_FILES for p in folder.glob(pattern)):
        allowed = safe_globals() if path.name.startswith("rng_state") else contextlib.nullcontext()
        try:
            with allowed:
                torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
            return f"{path.name} does not load with torch.load(weights_only=True) ({_load_error(err)})"
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        return f"{WEIGHTS_FILE} is not readable safetensors ({str(err)[:200]})"
    return None


def _latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint that loads safely. trainer_state.json is the last
    file Trainer writes into one, and older ones are removed only after it. A checkpoint
    that fails `_checkpoint_problem` is discarded (logged), and the one before it tried."""
    found = []
    for folder in run_dir.glob("checkpoint-*"):
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if (folder / WEIGHTS_FILE).is_file():
            found.append((int(folder.name.split("-")[-1]), folder))
    for _, folder in sorted(found, reverse=True):
        problem = _checkpoint_problem(folder)
        if problem is None:
            return folder
        log.warning(
            "checkpoint %s is discarded: %s; training resumes from an earlier checkpoint, or from the start",
            folder,
            problem,
        )
        discard(folder)
    return None


def lora_config(*, rank: int, alpha: float, dropout: float, target_modules, options: dict | None = None):
    """peft's LoraConfig for harness's keys and the user's other LoRA options
    (`train.lora`); a wrong option is a TrainError naming it."""
    from peft import LoraConfig

    # peft takes "all-linear" as a string (every linear layer but the output head)
    modules = "all-linear" if list(target_modules) in (["all-linear"], list("all-linear")) else list(target_modules)
    options = dict(options or {})
    taken = sorted(set(options) & {"r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "bias"})
    if taken:
        raise TrainError(
            f"train.lora: {', '.join(taken)} set by harness (use train.rank, alpha, dropout, target_modules)"
        )
    try:
        return LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=modules,
            task_type="CAUSAL_LM",
            bias="none",
            **options,
        )
    except (TypeError, ValueError) as err:
        raise TrainError(f"train.lora: {str(err).splitlines()[0]}") from None


def _make_trainable(
    lm: LoadedModel,
    *,
    method: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules,
    adapter_name: str,
    lora_options: dict | None = None,
):
    """`lm.model` ready to train: every weight (`full`), or a new LoRA adapter that alone
    trains (`lora`, and `qlora` on a 4-bit base)."""
    if not METHODS[method].adapter:
        if hasattr(lm.model, "peft_config"):
            raise TrainError("train.method: full fine-tuning needs a model without LoRA adapters")
        for param in lm.model.parameters():
            param.requires_grad = True
        return lm.model
    from peft import get_peft_model

    if getattr(lm.model, "is_loaded_in_4bit", False):  # QLoRA
        from peft import prepare_model_for_kbit_training

        from harness.models.local import keep_4bit_trainable

        if not hasattr(lm.model, "peft_config"):
            lm.model = prepare_model_for_kbit_training(lm.model, use_gradient_checkpointing=False)
        keep_4bit_trainable(lm.model)
    config = lora_config(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules, options=lora_options)
    try:
        if hasattr(lm.model, "peft_config"):
            lm.model.add_adapter(adapter_name, config)
            lm.model.set_adapter(adapter_name)
            model = lm.model
        else:
            model = get_peft_model(lm.model, config, adapter_name=adapter_name)
    except ValueError as err:
        raise TrainError(f"train.target_modules: {str(err).splitlines()[0]}") from None
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name and f".{adapter_name}." in name
    return model


def _trainer_class(*, full: bool, adapter_name: str):
    from transformers import Trainer

    class HarnessTrainer(Trainer):
        """Trainer whose checkpoints hold the trained weights as safetensors (the adapter
        alone for LoRA), read back without unpickling."""

        def _save(self, output_dir=None, state_dict=None):
            if not self.args.should_save:  # every process calls it; the first one writes
                return
            folder = Path(output_dir or self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            _save_safetensors(_weights(self.model, full=full, adapter_name=adapter_name), folder / WEIGHTS_FILE)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            from safetensors.torch import load_file

            state = load_file(str(Path(resume_from_checkpoint) / WEIGHTS_FILE))
            _set_weights(self.model, state, full=full, adapter_name=adapter_name)

    return HarnessTrainer


@dataclass(frozen=True)
class Launch:
    """This process's place in a data-parallel launch: torchrun and `accelerate launch`
    start one process per device and tell each its RANK and the WORLD_SIZE; a plain run
    is process 0 of 1."""

    process_rank: int = 0  # which of the launched processes this is (not LoRA's `rank`)
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The first process: the one that writes files."""
        return self.process_rank == 0


def launch_from_env() -> Launch:
    """The launch this process belongs to: the one place harness reads RANK and WORLD_SIZE."""
    return Launch(process_rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")))


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation settings a run actually used (TrainResult.settings records them)."""

    per_device_batch_size: int
    gradient_accumulation: int
    max_grad_norm: float
    gradient_checkpointing: bool
    schedule: str
    warmup_steps: int
    weight_decay: float
    bf16: bool
    optimizer: str
    steps_per_epoch: int


def _plan(
    lm: LoadedModel,
    n_train: int,
    *,
    world_size: int,
    batch_size: int,
    gradient_accumulation: int,
    epochs: int,
    max_steps: int | None,
    warmup_ratio: float,
    max_grad_norm: float,
    gradient_checkpointing: bool,
    schedule: str,
    weight_decay: float,
) -> tuple[TrainSettings, int]:
    """The settings of a run over `n_train` rows, and its optimizer steps in all.
    `batch_size` is the global batch of one forward pass, split over the processes."""
    per_device = max(1, batch_size // world_size)
    batches_per_epoch = math.ceil(n_train / (per_device * world_size))
    steps_per_epoch = math.ceil(batches_per_epoch / gradient_accumulation)
    total_steps = min(epochs * steps_per_epoch, max_steps) if max_steps else epochs * steps_per_epoch
    settings = TrainSettings(
        per_device_batch_size=per_device,
        gradient_accumulation=gradient_accumulation,
        max_grad_norm=max_grad_norm,
        gradient_checkpointing=gradient_checkpointing,
        schedule=schedule,
        warmup_steps=int(warmup_ratio * total_steps),
        weight_decay=weight_decay,
        bf16=lm.dtype == "bfloat16",
        optimizer="adamw_torch",
        steps_per_epoch=steps_per_epoch,
    )
    return settings, total_steps


def _training_arguments(
    lm: LoadedModel,
    settings: TrainSettings,
    *,
    run_dir: Path,
    total_steps: int,
    lr: float,
    seed: int,
    checkpoint_every: int | None,
):
    """transformers' TrainingArguments for `settings`; a checkpoint every
    `checkpoint_every` optimizer steps, or none when it is None."""
    from transformers import TrainingArguments

    s = settings
    return TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=s.per_device_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation,
        learning_rate=lr,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        lr_scheduler_type=s.schedule,
        warmup_steps=s.warmup_steps,
        max_steps=total_steps,
        optim=s.optimizer,
        logging_strategy="steps",
        logging_steps=1,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        save_strategy="no" if checkpoint_every is None else "steps",
        save_steps=checkpoint_every or 1,
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        use_cpu=lm.device == "cpu",
        bf16=s.bf16,
        activation_checkpointing=s.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False,
        restore_callback_states_from_checkpoint=False,  # harness restores its own callback (_resume)
    )


def _make_trainer(lm: LoadedModel, model, args, material: Material, callback, *, full: bool, adapter_name: str):
    from transformers.trainer_callback import PrinterCallback

    pad_id = lm.tokenizer.pad_token_id
    trainer = _trainer_class(full=full, adapter_name=adapter_name)(
        model=model,
        args=args,
        train_dataset=_Rows(material.train),
        data_collator=lambda rows: _pad([(r["input_ids"], r["labels"]) for r in rows], pad_id),
        callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # Trainer prints its logs without a progress bar; harness has its own
    return trainer


@contextlib.contextmanager
def _run_dir(checkpoint_dir: str | Path | None):
    """Trainer's output folder: `<checkpoint_dir>/trainer`, kept for a resume, or without
    a `checkpoint_dir` a scratch folder removed after the block."""
    if checkpoint_dir is not None:
        yield Path(checkpoint_dir) / "trainer"
        return
    scratch = tempfile.mkdtemp(prefix="harness-trainer-")
    try:
        yield Path(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _resume(callback: _Progress, run_dir: Path, update) -> tuple[Path | None, int]:
    """The newest checkpoint in `run_dir` and its step, with the callback's state restored
    from it; (None, 0) when there is none."""
    checkpoint = _latest_checkpoint(run_dir)
    if checkpoint is None:
        return None, 0
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    callback.restore(saved["stateful_callbacks"]["Callback"]["attributes"])
    log.info("training resumed from %s at step %d", checkpoint, saved["global_step"])
    if update is not None:
        update(saved["global_step"])
    return checkpoint, saved["global_step"]


def _progress_update(progress, total_steps: int):
    """A callable taking a step count, from `progress` (a callable, or a tqdm bar whose
    total becomes the planned steps), or None."""
    if progress is not None and hasattr(progress, "total"):
        progress.total = total_steps
        progress.refresh()
    return getattr(progress, "update", progress)


def _finish(
    lm: LoadedModel,
    callback: _Progress,
    *,
    out_dir: Path,
    full: bool,
    adapter_name: str,
    gradient_checkpointing: bool,
    launch: Launch,
) -> int:
    """Put the best epoch's weights back (early stopping), leave the model in eval mode,
    and save it from the first process; returns the bytes saved (0 on the others)."""
    if callback.best_state is not None:
        _set_weights(lm.model, callback.best_state, full=full, adapter_name=adapter_name)
    lm.model.eval()
    if gradient_checkpointing and hasattr(lm.model, "gradient_checkpointing_disable"):
        lm.model.gradient_checkpointing_disable()
    saved_bytes = 0
    if launch.is_main:
        _save_trained(lm, out_dir, full=full, adapter_name=adapter_name)
        saved_bytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    if launch.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return saved_bytes


def _train(
    lm: LoadedModel, trainer, callback: _Progress, *, resumed: Path | None, start_step: int, total_steps: int
) -> PeakMemory:
    """Run Trainer from `resumed` (or the start), unless the checkpoint already ended the
    run; returns the memory it held."""
    if lm.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    callback.t0 = time.perf_counter()
    with PeakMemory() as memory:
        # what torch held on the GPU before training: the weights, and for full
        # fine-tuning the untouched base the other pipelines answer from
        memory.gpu_start_mb = torch.cuda.memory_allocated() / 2**20 if lm.device == "cuda" else None
        if start_step < total_steps and not callback.status.stopped_early:
            trainer.train(resume_from_checkpoint=str(resumed) if resumed is not None else None)
    return memory


def train_model(
    lm: LoadedModel,
    examples: list[Example],
    *,
    method: str = "lora",
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.05,
    target_modules=("q_proj", "v_proj"),
    lora_options: dict | None = None,
    lr: float,
    epochs: int,
    max_steps: int | None = None,
    batch_size: int,
    max_length: int,
    warmup_ratio: float = 0.0,
    dev_fraction: float = 0.0,
    early_stopping_patience: int | None = None,
    seed: int = 0,
    out_dir: str | Path,
    adapter_name: str = "default",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    progress=None,
    gradient_accumulation: int = 1,
    max_grad_norm: float = 1.0,
    gradient_checkpointing: bool = False,
    schedule: str = "linear",
    weight_decay: float = 0.0,
    packing: bool = False,
    dev_examples: list[Example] | None = None,
) -> TrainResult:
    """Train `lm.model` on `examples` and save the adapter (or the model, for `full`) to
    `out_dir` (see the module docstring). `rank` is LoRA's. `batch_size` is the global
    batch of one forward pass, split over the processes of a data-parallel launch; an
    optimizer step sees `batch_size * gradient_accumulation` rows. `progress` is a
    callable taking a step count, or a tqdm bar (its total is set to the planned steps)."""
    if schedule not in SCHEDULES:
        raise TrainError(f"train.schedule: unknown schedule {schedule!r}; one of {', '.join(SCHEDULES)}")
    o = SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("lm", "examples")})
    launch, full = launch_from_env(), not METHODS[method].adapter
    material, settings, total_steps = _material_and_plan(lm, examples, o, launch)
    torch.manual_seed(seed)  # the new adapter's initial weights
    weights_bytes = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    lora = {k: getattr(o, k) for k in ("rank", "alpha", "dropout", "target_modules", "lora_options")}
    model = lm.model = _make_trainable(lm, method=method, adapter_name=adapter_name, **lora)
    params = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    update = _progress_update(progress, total_steps)
    callback = _make_callback(lm, material, settings, o, launch, update)
    with _run_dir(checkpoint_dir) as run_dir:
        args = _training_arguments(
            lm,
            settings,
            run_dir=run_dir,
            total_steps=total_steps,
            lr=lr,
            seed=seed,
            checkpoint_every=None if checkpoint_dir is None else checkpoint_every,
        )
        trainer = _make_trainer(lm, model, args, material, callback, full=full, adapter_name=adapter_name)
        resumed, start_step = _resume(callback, run_dir, update) if checkpoint_dir is not None else (None, 0)
        memory = _train(lm, trainer, callback, resumed=resumed, start_step=start_step, total_steps=total_steps)
    return _saved_result(
        lm,
        trainer,
        callback,
        material,
        memory,
        settings,
        o,
        launch,
        start_step=start_step,
        params=params,
        weights_bytes=weights_bytes,
    )


def _saved_result(lm, trainer, callback, material, memory, settings, o, launch, *, start_step, params, weights_bytes):
    """Save the adapter (or model) and return what the call measured."""
    wall = callback.status.elapsed + time.perf_counter() - callback.t0
    saved_bytes = _finish(
        lm,
        callback,
        out_dir=Path(o.out_dir),
        full=not METHODS[o.method].adapter,
        adapter_name=o.adapter_name,
        gradient_checkpointing=o.gradient_checkpointing,
        launch=launch,
    )
    trainable, total = params
    steps, tokens = trainer.state.global_step or start_step, int(trainer.state.num_input_tokens_seen or 0)
    return TrainResult(
        adapter_dir=str(o.out_dir),
        loss_curve=callback.status.curve,
        best_epoch=callback.status.best_epoch,
        stopped_early=callback.status.stopped_early,
        steps=steps,
        train_examples=len(material.train),
        dev_examples=len(material.dev),
        trainable_params=trainable,
        total_params=total,
        tokens=tokens,
        wall_seconds=wall,
        tokens_per_second=tokens / max(wall, 1e-9),
        peak_rss_mb=memory.peak_mb,
        adapter_bytes=saved_bytes,
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if lm.device == "cuda" else None,
        world_size=launch.world_size,
        method=o.method,
        steps_run=steps - start_step,
        resumed_from_step=start_step,
        weights_bytes=weights_bytes,
        material=material.stats,
        settings=asdict(settings),
        start_rss_mb=memory.start_mb,
        training_memory_mb=_training_memory(lm, memory, weights_bytes, steps_run=steps - start_step),
    )


def _material_and_plan(lm: LoadedModel, examples: list[Example], o: SimpleNamespace, launch):
    """The tokenized material, the Trainer settings and the planned optimizer steps, from
    train_model's options `o`."""
    material = prepare_material(
        lm.tokenizer,
        examples,
        max_length=o.max_length,
        dev_fraction=o.dev_fraction,
        seed=o.seed,
        packing=o.packing,
        dev_examples=o.dev_examples,
    )
    settings, total_steps = _plan(
        lm,
        len(material.train),
        world_size=launch.world_size,
        batch_size=o.batch_size,
        gradient_accumulation=o.gradient_accumulation,
        epochs=o.epochs,
        max_steps=o.max_steps,
        warmup_ratio=o.warmup_ratio,
        max_grad_norm=o.max_grad_norm,
        gradient_checkpointing=o.gradient_checkpointing,
        schedule=o.schedule,
        weight_decay=o.weight_decay,
    )
    return material, settings, total_steps


def _make_callback(lm: LoadedModel, material: Material, settings, o: SimpleNamespace, launch, update):
    """The callback that runs the dev loss, early stopping, checkpoints and progress."""
    return _callback_class()(
        lm=lm,
        dev=material.dev,
        batch_size=o.batch_size,
        pad_id=lm.tokenizer.pad_token_id,
        steps_per_epoch=settings.steps_per_epoch,
        patience=o.early_stopping_patience,
        best_dir=None if o.checkpoint_dir is None else Path(o.checkpoint_dir),
        full=not METHODS[o.method].adapter,
        adapter_name=o.adapter_name,
        update=update,
        is_main=launch.is_main,
    )


def _training_memory(lm: LoadedModel, memory: PeakMemory, weights_bytes: int, *, steps_run: int) -> float | None:
    """What training held (see TrainResult.training_memory_mb), in MB: the weights plus
    what memory rose by while training, on a GPU as on a CPU (so a second copy of the
    base held for the other pipelines is not counted); None when this process ran no
    step (a checkpoint that had already finished)."""
    if steps_run == 0:
        return None
    if lm.device == "cuda":
        return weights_bytes / 2**20 + torch.cuda.max_memory_allocated() / 2**20 - memory.gpu_start_mb
    return None if memory.rise_mb is None else weights_bytes / 2**20 + memory.rise_mb


def _save_trained(lm: LoadedModel, out_dir: Path, *, full: bool, adapter_name: str) -> None:
    """The adapter's files (PEFT's layout), or the whole fine-tuned model with its tokenizer."""
    if full:
        lm.model.save_pretrained(out_dir)
        lm.tokenizer.save_pretrained(out_dir)
        return
    lm.model.save_pretrained(out_dir, selected_adapters=[adapter_name])
    if (out_dir / adapter_name).is_dir():  # PEFT puts a non-default adapter in a subfolder
        for f in (out_dir / adapter_name).iterdir():
            f.rename(out_dir / f.name)
        (out_dir / adapter_name).rmdir()
