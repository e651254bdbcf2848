"""Export a PEFT LoRA adapter as a GGUF LoRA adapter, so llama.cpp serves the fine-tuned arm.

harness trains adapters in the PEFT layout (`adapter_config.json`,
`adapter_model.safetensors`), which vLLM serves as is. llama.cpp (and llama-cpp-python's
server, its `lora_path` model setting) loads adapters only as GGUF files laid out the way
llama.cpp's `convert_lora_to_gguf.py` writes them; this module writes that layout from the
adapter and the base model's GGUF, without llama.cpp's source tree:

    export_lora(adapter_dir, base_gguf="SmolLM2-135M-Instruct.Q4_1.gguf", out="adapter.gguf")

What the file holds, as convert_lora_to_gguf.py does it:
- `general.architecture` the base GGUF's (llama.cpp refuses a LoRA whose architecture is
  not the model's), `general.type` "adapter", `adapter.type` "lora", `adapter.lora.alpha`
  the PEFT `lora_alpha` (llama.cpp scales each pair by alpha / rank, as PEFT does).
- per adapted layer, `<GGUF name>.lora_a` (PEFT lora_A, rank x in) and `.lora_b` (PEFT
  lora_B, out x rank), float32 (the script's default `--outtype f32`), named through
  gguf-py's tensor name map, e.g. `blk.3.attn_q.weight.lora_a`.
- for the llama architecture, the rows of q_proj's and k_proj's lora_B permuted exactly
  as convert_hf_to_gguf.py permutes the base q/k weights (LlamaModel.permute: the GGUF
  stores rotary halves interleaved, Hugging Face stores them split); lora_A is
  untouched, since the permutation acts on output rows only.

Only plain LoRA on linear layers is exported; DoRA, rsLoRA, per-module alphas,
`modules_to_save`, trained biases and embedding LoRA are refused with one line (llama.cpp
would apply them wrongly or not at all).

The file is written beside `out` and renamed into place. It carries `EXPORT_KEY` (a
namespaced key llama.cpp does not read), so a later export may replace a file this wrote;
any other file at `out` is refused before any work, unless `force`, which keeps it as
`<out>.backup-<date>-<time>` (check_out).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EXPORT_KEY = "harness.export_lora"  # marks a GGUF this module wrote, which a later export may replace


class ExportError(ValueError):
    """The adapter cannot be exported as a llama.cpp LoRA; the message says why, in one line."""


@dataclass(frozen=True)
class BaseGGUF:
    """What the export needs from the base model's GGUF: its architecture, head counts
    (for the q/k permutation), block count (for the name map) and tensor shapes in
    ggml order (ne0 = input width, ne1 = output width)."""

    arch: str
    n_head: int
    n_head_kv: int
    n_blocks: int
    shapes: dict


def read_base(path: str | Path) -> BaseGGUF:
    """The architecture, head counts, block count and tensor shapes of a GGUF model file."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--base: GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)

    def value(key):
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    if value("general.type") not in (None, "model"):
        raise ExportError(f"--base: {path} is a {value('general.type')!r} GGUF, not a model")
    n_head, n_head_kv = value(f"{arch}.attention.head_count"), value(f"{arch}.attention.head_count_kv")
    return BaseGGUF(
        arch=arch,
        n_head=int(n_head or 0),
        n_head_kv=int(n_head_kv or n_head or 0),
        n_blocks=int(value(f"{arch}.block_count") or 0),
        shapes={t.name: tuple(int(n) for n in t.shape) for t in reader.tensors},
    )


def check_lora_config(config: dict) -> None:
    """Refuse, in one line, any adapter that llama.cpp's LoRA would not reproduce."""
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"adapter: a {config['peft_type']} adapter; only LoRA exports to llama.cpp")
    refused = {
        "use_dora": "DoRA",
        "use_rslora": "rsLoRA (llama.cpp scales by alpha/rank, not alpha/sqrt(rank))",
        "modules_to_save": "modules_to_save (fully trained modules)",
        "alpha_pattern": "per-module alphas",
        "trainable_token_indices": "trainable tokens",
    }
    for key, what in refused.items():
        if config.get(key):
            raise ExportError(f"adapter: uses {what}; llama.cpp serves plain LoRA only ({key} is set)")
    if config.get("bias", "none") != "none":
        raise ExportError(f"adapter: trains biases (bias: {config['bias']}); llama.cpp serves plain LoRA only")


def permute_rows(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output rows of a matrix: each
    head's rotary halves, split in Hugging Face's layout, interleaved as in the GGUF."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def lora_tensors(state: dict, base: BaseGGUF) -> dict[str, np.ndarray]:
    """The GGUF adapter's tensors (name -> float32 array, numpy order) from the PEFT
    state dict `state` (name -> array), checked against the base model's shapes."""
    import gguf

    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(base.arch)
    if base.arch not in PERMUTES_QK or arch is None:
        raise ExportError(
            f"--base: architecture {base.arch!r} is not supported for LoRA export (supported: {', '.join(PERMUTES_QK)})"
        )
    names = gguf.get_tensor_name_map(arch, base.n_blocks)
    pairs: dict[str, dict] = {}
    for key, tensor in state.items():
        for part, suffix in (("a", ".lora_A.weight"), ("b", ".lora_B.weight")):
            if key.endswith(suffix):
                hf = key.removeprefix("base_model.model.")[: -len(suffix)] + ".weight"
                pairs.setdefault(hf, {})[part] = np.asarray(tensor, dtype=np.float32)
                break
        else:
            raise ExportError(
                f"adapter: tensor {key!r} is not a LoRA A/B matrix of a linear layer "
                "(embedding LoRA, DoRA magnitudes and saved modules are not exported)"
            )
    out: dict[str, np.ndarray] = {}
    for hf, pair in sorted(pairs.items()):
        if set(pair) != {"a", "b"}:
            raise ExportError(f"adapter: {hf} has lora_{'A' if 'a' not in pair else 'B'} missing")
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None or name not in base.shapes:
            raise ExportError(
                f"adapter: {hf} has no tensor in the base GGUF ({name or 'no GGUF name'}; "
                "a tied lm_head or a different base model?)"
            )
        a, b = pair["a"], pair["b"]
        if PERMUTES_QK[base.arch] and hf.endswith("q_proj.weight"):
            b = permute_rows(b, base.n_head, base.n_head)
        elif PERMUTES_QK[base.arch] and hf.endswith("k_proj.weight"):
            b = permute_rows(b, base.n_head, base.n_head_kv)
        # ggml order reverses numpy's: lora_a is ne (in, rank), lora_b (rank, out); llama.cpp
        # checks base ne0 == lora_a ne0, base ne1 == lora_b ne1, and lora_a ne1 == lora_b ne0.
        ne_in, ne_out = base.shapes[name][:2]
        if a.shape[1] != ne_in or b.shape[0] != ne_out or a.shape[0] != b.shape[1]:
            raise ExportError(
                f"adapter: {hf} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit "
                f"the base GGUF's {name} ({ne_out} x {ne_in}); a different base model?"
            )
        out[name + ".lora_a"] = np.ascontiguousarray(a)
        out[name + ".lora_b"] = np.ascontiguousarray(b)
    if not out:
        raise ExportError("adapter: no LoRA tensors in adapter_model.safetensors")
    return out


def _written_here(path: Path) -> bool:
    """Whether `path` is a GGUF file that export_lora wrote (it carries EXPORT_KEY)."""
    import gguf

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return False
        return EXPORT_KEY in gguf.GGUFReader(path).fields
    except (OSError, ValueError, IndexError, KeyError):  # not a GGUF file gguf-py can read: not ours
        return False


def check_out(out: Path, *, force: bool = False) -> bool:
    """Refuse, in one line, an `out` that export_lora did not write: a folder or a link
    always, another file unless `force`. Returns whether the file there is to be kept as
    a backup."""
    if out.is_symlink() or out.is_dir():
        raise ExportError(f"--out: {out} is a {'link' if out.is_symlink() else 'folder'}; give the GGUF file to write")
    if not out.exists() or _written_here(out):
        return False
    if force:
        return True
    raise ExportError(
        f"--out: {out} exists and was not written by harness export-lora; harness will not replace it "
        f"(--out another file, or --force to replace it and keep it as {out.name}.backup-<date>-<time>)"
    )


def _write_gguf(path: str, *, base: BaseGGUF, alpha: float, name: str, tensors: dict[str, np.ndarray]) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string(EXPORT_KEY, "harness export-lora")
    for tensor_name, array in tensors.items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_lora(adapter_dir: str | Path, *, base_gguf: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the PEFT LoRA adapter in `adapter_dir` as a llama.cpp GGUF LoRA adapter for
    the model in `base_gguf`, to `out` (written beside, then renamed; see check_out for
    what may stand at `out`). Returns `out`."""
    from safetensors.numpy import load_file

    from harness.store.results import backup_path, file_mode

    adapter_dir, out = Path(adapter_dir), Path(out)
    check_out(out, force=force)  # before any work
    config_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise ExportError(
            f"adapter: {adapter_dir} is not a PEFT adapter folder (adapter_config.json and adapter_model.safetensors)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    check_lora_config(config)
    base = read_base(base_gguf)
    tensors = lora_tensors(load_file(str(weights_path)), base)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    try:
        _write_gguf(partial, base=base, alpha=float(config["lora_alpha"]), name=adapter_dir.name, tensors=tensors)
        os.chmod(partial, file_mode(out))  # mkstemp's 0600 otherwise
        if check_out(out, force=force):  # again: nothing new in the way since the start
            backup = backup_path(out)
            os.replace(out, backup)
            log.warning("%s: replaced (--force); the file that was there is kept as %s", out, backup)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return out


# Architectures whose base q/k weights convert_hf_to_gguf.py permutes (LlamaModel), so the
# adapter's q/k lora_B rows are permuted the same way. Only llama is tested against
# llama.cpp here (SmolLM2); others are refused rather than guessed.
PERMUTES_QK = {"llama": True}
