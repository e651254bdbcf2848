"""QLoRA: the base in 4-bit NF4 through bitsandbytes, LoRA on top.

The trap this guards against: on a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a
4-bit weight for fast inference the first time the layer runs in eval mode without
gradients, and training then reads the packed weight as if it were plain, so the LoRA
layers below the top get wrong (or no) gradients. The tests turn that CPU path on
explicitly, so they exercise it on any CPU."""

import json

import pytest
import torch

from conftest import tiny_config
from harness.config import parse_config
from harness.models.local import generate, keep_4bit_trainable, load_generator
from harness.run.runner import run_experiment

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture
def avx512_bf16(monkeypatch):
    """4-bit layers built from here on behave as on a CPU with AVX512-BF16."""
    import bitsandbytes.nn.modules as modules

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: True)


def _layer0_lora_grads(model, ids, *, required: bool = True) -> torch.Tensor | None:
    """The layer-0 LoRA B gradients after one backward pass; None (when not `required`)
    where the layers got no gradient at all."""
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [
        p.grad.flatten()
        for n, p in model.named_parameters()
        if "lora_B" in n and ".layers.0." in n and p.grad is not None
    ]
    if not grads and not required:
        return None
    assert len(grads) == 2  # q_proj and v_proj of layer 0
    return torch.cat(grads).clone()


def _with_lora(model):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    return get_peft_model(
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


IDS = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(0))
PROMPTS = ["Where was Ana born?", "Who founded the guild?"]


def test_the_trap_is_real_plain_bitsandbytes_breaks_layer0_gradients_after_eval(tiny_wide_model_dir, avx512_bf16):
    """Without the harness's guard: the same model, loaded by transformers directly."""
    from transformers import AutoModelForCausalLM

    from harness.models.local import _nf4_config

    lm = load_generator(str(tiny_wide_model_dir), dtype="float32", device="cpu")  # for the tokenizer
    lm.model = _with_lora(
        AutoModelForCausalLM.from_pretrained(
            tiny_wide_model_dir, device_map="cpu", quantization_config=_nf4_config("float32")
        )
    )
    before = _layer0_lora_grads(lm.model, IDS)
    lm.model.eval()
    generate(lm, PROMPTS, max_new_tokens=3, batch_size=2)
    after = _layer0_lora_grads(lm.model, IDS, required=False)
    # Silently wrong gradients; on a CPU that really has AVX512-BF16 (not only the flag
    # patched above) the packed path leaves layer 0 with no gradient at all.
    assert after is None or _cos(after, before) < 0.9


def test_layer0_lora_gets_its_gradients_after_an_evaluation_pass(tiny_wide_model_dir, avx512_bf16):
    lm = load_generator(str(tiny_wide_model_dir), dtype="float32", device="cpu", quantization="nf4")
    assert lm.model.is_loaded_in_4bit
    lm.model = _with_lora(lm.model)
    before = _layer0_lora_grads(lm.model, IDS)
    assert float(before.abs().sum()) > 0
    lm.model.eval()
    generate(lm, PROMPTS, max_new_tokens=3, batch_size=2)
    with torch.no_grad():
        lm.model(input_ids=IDS)
    after = _layer0_lora_grads(lm.model, IDS)
    assert torch.allclose(after, before, atol=1e-7)


def test_weights_packed_before_training_are_unpacked_by_training(tiny_wide_model_dir, avx512_bf16):
    """A model packed before the guard ran (loaded elsewhere, say): train_lora's guard
    restores the plain layout, up to the rounding of bitsandbytes' inverse."""
    lm = load_generator(str(tiny_wide_model_dir), dtype="float32", device="cpu", quantization="nf4")
    lm.model = _with_lora(lm.model)
    before = _layer0_lora_grads(lm.model, IDS)
    for module in lm.model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = True
    lm.model.eval()
    generate(lm, PROMPTS, max_new_tokens=3, batch_size=2)
    assert keep_4bit_trainable(lm.model) == 14  # 7 linear layers in each of 2 blocks
    assert _cos(_layer0_lora_grads(lm.model, IDS), before) > 0.99


def test_a_qlora_run_trains_and_scores_on_the_4bit_base(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="qlora",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 3, "bootstrap_samples": 200},
    )
    raw["train"]["method"] = "qlora"
    out = run_experiment(parse_config(raw), results_root=tmp_path)
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["quantization"] == "nf4" and m["costs"]["training"]["method"] == "qlora"
    curve = json.loads((out / "loss_curve.json").read_text())
    # per epoch: a single step's loss is noisy (the last batch of an epoch is a short one)
    epochs = [[p["train_loss"] for p in curve if p.get("epoch") == e and "train_loss" in p] for e in (1, 2)]
    assert sum(epochs[1]) / len(epochs[1]) < sum(epochs[0]) / len(epochs[0])
    dev = [p["dev_loss"] for p in curve if "dev_loss" in p]
    assert len(dev) == 2 and dev[1] < dev[0]
    assert "QLoRA (base in 4-bit NF4)" in (out / "report.md").read_text()
    lora = tiny_config(
        tiny_model_dir,
        name="lora",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 3, "bootstrap_samples": 200},
    )
    m2 = json.loads((run_experiment(parse_config(lora), results_root=tmp_path) / "metrics.json").read_text())
    assert m2["model"]["fingerprint"] != m["model"]["fingerprint"]  # 4-bit adapters are cached apart


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_on_cuda_reports_gpu_memory(tiny_model_dir, tmp_path):
    raw = tiny_config(
        tiny_model_dir,
        name="qlora-gpu",
        eval={"pipelines": ["base", "finetuned"], "max_new_tokens": 3, "bootstrap_samples": 200},
    )
    raw["model"]["device"] = "cuda"
    raw["train"]["method"] = "qlora"
    m = json.loads((run_experiment(parse_config(raw), results_root=tmp_path) / "metrics.json").read_text())
    assert m["costs"]["training"]["peak_gpu_mb"] > 0
