"""The PEFT -> GGUF LoRA export (harness/models/gguf_lora.py), and the fine-tuned arm served by a
real llama.cpp server.

Fast: the file's metadata, names, shapes and tensors, read back with gguf-py against the
embedded SmolLM2 GGUF and compared with the adapter's safetensors through the q/k row
order written out here (never the exporter's own helper, so a wrong permutation, scale or
transpose in the exporter fails); the refusals (DoRA, rsLoRA, modules_to_save, a tensor
the base lacks).

Slow (llama-cpp-python's server on 127.0.0.1, as tests/test_endpoint_server.py): an
adapter trained here on SmolLM2 by harness's own trainer, exported, served as a second
alias of the same GGUF with `lora_path`, and scored through the endpoint backend. Its
log-likelihoods agree with the in-process PEFT model's within the tolerance below, and
the adapter's effect (adapter minus base, per item) is the same on both sides, which an
ignored adapter (served effect zero) cannot pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.models.gguf_lora import ExportError, check_lora_config, export_lora, lora_tensors, permute_rows, read_base
from harness.models.local import embedded_gguf

# Served adapter vs in-process PEFT, per continuation token (nats): the base's tolerance
# (tests/test_endpoint_server.py; Q4_1 weights with 8-bit activations in llama.cpp,
# dequantised to float32 in-process). The adapter's A/B products run in float32 on both
# sides. Measured on these items: at most 0.14 per token, mean 0.05.
SERVED_ADAPTER_TOLERANCE_PER_TOKEN = 0.25


def _state(base, *, rank=4, seed=0, layers=(0,), targets=("q_proj", "k_proj", "v_proj")):
    """A PEFT state dict of random LoRA matrices shaped for the base GGUF."""
    rng = np.random.default_rng(seed)
    width = {"q_proj": base.n_head, "k_proj": base.n_head_kv, "v_proj": base.n_head_kv}
    head_dim = base.shapes["blk.0.attn_q.weight"][1] // base.n_head
    hidden = base.shapes["blk.0.attn_q.weight"][0]
    state = {}
    for layer in layers:
        for t in targets:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{t}"
            state[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, hidden)).astype(np.float32)
            state[f"{prefix}.lora_B.weight"] = rng.standard_normal((width[t] * head_dim, rank)).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def base():
    return read_base(embedded_gguf("smollm2"))


def _write_adapter(folder, state, **config):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj"], **config}
        )
    )
    return folder


def interleaved_rows(n_heads: int, head_dim: int) -> list[int]:
    """Written out, the row order llama.cpp's GGUF keeps q and k in (convert_hf_to_gguf.py
    permutes the Hugging Face weights so): within each head, Hugging Face holds the rotary
    halves one after the other (rows 0..d/2-1, then d/2..d-1), the GGUF interleaves them
    (0, d/2, 1, d/2+1, ...). GGUF row r holds Hugging Face row order[r]."""
    order = []
    for h in range(n_heads):
        for i in range(head_dim // 2):
            order += [h * head_dim + i, h * head_dim + head_dim // 2 + i]
    return order


def test_export_writes_llama_cpp_layout(tmp_path, base):
    """The written GGUF read back with gguf-py's reader, against the PEFT adapter's own
    safetensors: names as llama.cpp looks them up, float32, shapes in ggml order, lora_a
    = PEFT's lora_A as is, lora_b = PEFT's lora_B (unscaled: llama.cpp applies alpha /
    rank) with q and k rows in the order above; and that order is the one transformers
    undoes when it loads the base GGUF (so the served product B.A lands on the same rows
    of q/k as the in-process PEFT one)."""
    import gguf
    from safetensors.numpy import load_file
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    assert (base.arch, base.n_head, base.n_head_kv, base.n_blocks) == ("llama", 9, 3, 30)
    folder = _write_adapter(tmp_path / "ad", _state(base, layers=(0, 29)))
    out = export_lora(folder, base_gguf=embedded_gguf("smollm2"), out=tmp_path / "ad.gguf")
    peft = load_file(str(folder / "adapter_model.safetensors"))
    reader = gguf.GGUFReader(out)
    kv = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert kv["general.architecture"] == "llama" and kv["general.type"] == "adapter"
    assert kv["adapter.type"] == "lora" and kv["adapter.lora.alpha"] == 8.0
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == sorted(
        f"blk.{layer}.attn_{m}.weight.lora_{p}" for layer in (0, 29) for m in ("q", "k", "v") for p in ("a", "b")
    )
    head_dim = 576 // 9  # SmolLM2-135M: hidden 576, 9 query heads, 3 key/value heads of 64
    undo = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    for layer in (0, 29):
        for hf, name, heads in (("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3), ("v_proj", "attn_v", None)):
            a, b = tensors[f"blk.{layer}.{name}.weight.lora_a"], tensors[f"blk.{layer}.{name}.weight.lora_b"]
            assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
            ne_in, ne_out = base.shapes[f"blk.{layer}.{name}.weight"]
            assert (ne_in, ne_out) == (576, 64 * (heads or 3))
            assert tuple(a.shape) == (576, 4) and tuple(b.shape) == (4, ne_out)  # ggml order: ne0 first
            peft_a = peft[f"base_model.model.model.layers.{layer}.self_attn.{hf}.lora_A.weight"]
            peft_b = peft[f"base_model.model.model.layers.{layer}.self_attn.{hf}.lora_B.weight"]
            np.testing.assert_array_equal(np.asarray(a.data), peft_a)
            want_b = peft_b if heads is None else peft_b[interleaved_rows(heads, head_dim)]
            np.testing.assert_array_equal(np.asarray(b.data), want_b)
            if heads is not None:
                assert not np.array_equal(want_b, peft_b)
                back = undo.process(np.asarray(b.data), f"blk.{layer}.{name}.weight").weights
                np.testing.assert_array_equal(back, peft_b)  # transformers' GGUF loader undoes it


def test_permute_rows_interleaves_rotary_halves():
    # one head of dimension 4: rows [r0 r1 | r2 r3] (halves split) -> [r0 r2 r1 r3]
    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(permute_rows(w, 1, 1)[:, 0], [0, 4, 2, 6])
    # one head of 8, where interleaving and its inverse differ: [0 1 2 3 | 4 5 6 7] -> [0 4 1 5 2 6 3 7]
    np.testing.assert_array_equal(permute_rows(np.arange(8).reshape(8, 1), 1, 1)[:, 0], [0, 4, 1, 5, 2, 6, 3, 7])
    assert interleaved_rows(1, 8) == [0, 4, 1, 5, 2, 6, 3, 7]
    # two heads of 2 for q, one kv head for k (n_head_kv replaces n_head)
    w = np.arange(4, dtype=np.float32).reshape(4, 1)
    np.testing.assert_array_equal(permute_rows(w, 2, 2)[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(permute_rows(w, 2, 1)[:, 0], [0, 2, 1, 3])


@pytest.mark.parametrize(
    "config, match",
    [
        ({"use_dora": True}, "DoRA"),
        ({"use_rslora": True}, "rsLoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"alpha_pattern": {"q_proj": 4}}, "per-module alphas"),
        ({"bias": "lora_only"}, "trains biases"),
        ({"peft_type": "IA3"}, "only LoRA"),
    ],
)
def test_refuses_what_llama_cpp_would_not_reproduce(config, match):
    with pytest.raises(ExportError, match=match):
        check_lora_config({"peft_type": "LORA", **config})
    check_lora_config({"peft_type": "LORA", "use_dora": False, "modules_to_save": None, "bias": "none"})


def test_refuses_tensors_the_base_lacks(tmp_path, base):
    state = _state(base)
    lm_head = {
        "base_model.model.lm_head.lora_A.weight": np.zeros((4, 576), np.float32),
        "base_model.model.lm_head.lora_B.weight": np.zeros((49152, 4), np.float32),
    }
    with pytest.raises(ExportError, match="no tensor in the base GGUF"):  # SmolLM2 ties lm_head to the embeddings
        lora_tensors({**state, **lm_head}, base)
    with pytest.raises(ExportError, match="not a LoRA A/B matrix"):
        lora_tensors(
            {
                **state,
                "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": np.ones(576, np.float32),
            },
            base,
        )
    wrong = dict(state)
    wrong["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"] = np.zeros((576, 4), np.float32)
    with pytest.raises(ExportError, match="do not fit"):
        lora_tensors(wrong, base)
    with pytest.raises(ExportError, match="not a PEFT adapter folder"):
        export_lora(tmp_path, base_gguf=embedded_gguf("smollm2"), out=tmp_path / "x.gguf")


def test_cli_export_lora(tmp_path, base, capsys):
    from harness.cli import main

    folder = _write_adapter(tmp_path / "ad", _state(base))
    assert main(["export-lora", str(folder), "--base", str(embedded_gguf("smollm2"))]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ad.gguf") and (tmp_path / "ad.gguf").is_file()
    _write_adapter(tmp_path / "dora", _state(base), use_dora=True)
    assert main(["export-lora", str(tmp_path / "dora"), "--base", str(embedded_gguf("smollm2"))]) == 2
    assert "DoRA" in capsys.readouterr().err


@pytest.mark.slow  # trains three steps on SmolLM2 and starts a server: a few CPU-minutes
def test_served_adapter_matches_in_process_peft(tmp_path, capsys):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from harness.answer.prompts import TEMPLATES, render
    from harness.data.world import generate_world
    from harness.models.endpoint import check_adapter, connect, llama_cpp_server_config, local_tokenizer
    from harness.models.local import load_generator, loglikelihood
    from harness.train.material import build_examples
    from harness.train.trainer import train_model
    from tests.test_endpoint import free_port
    from tests.test_endpoint_server import start_server, stop

    world = generate_world(seed=0, n_people=3, n_organisations=1, n_places=1, paraphrases=0, n_unanswerable=2)
    questions = [q for q in world.questions if q.choices][:4]
    lm = load_generator("smollm2", dtype="float32", device="cpu")
    pairs = [
        (render(lm.tokenizer, TEMPLATES["closed_book"], question=q.question), c) for q in questions for c in q.choices
    ]
    tokens = [
        len(lm.tokenizer(x + c, add_special_tokens=False)["input_ids"])
        - len(lm.tokenizer(x, add_special_tokens=False)["input_ids"])
        for x, c in pairs
    ]
    local_base = np.array(loglikelihood(lm, pairs, batch_size=8))
    # Three high-learning-rate steps on the world's facts (training is most of this test's
    # CPU time): an adapter whose effect on these items is nats, far above the
    # served-vs-in-process noise.
    examples = build_examples(lm.tokenizer, objective="sft", questions=world.train_questions)
    train_model(
        lm,
        examples,
        rank=8,
        alpha=16,
        dropout=0.0,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        lr=1e-2,
        epochs=1,
        max_steps=3,
        batch_size=4,
        max_length=48,
        seed=0,
        out_dir=tmp_path / "adapter",
    )
    local_ft = np.array(loglikelihood(lm, pairs, batch_size=8))

    lora = export_lora(tmp_path / "adapter", base_gguf=embedded_gguf("smollm2"), out=tmp_path / "adapter.gguf")
    port = free_port()
    config = llama_cpp_server_config(
        base_gguf=str(embedded_gguf("smollm2")),
        served_model="smollm2",
        served_adapter="smollm2-ft",
        lora_gguf=str(lora),
        port=port,
        n_threads=2,
    )
    (tmp_path / "server.json").write_text(json.dumps(config))
    proc = start_server(port, config_file=tmp_path / "server.json")
    try:
        served = connect(
            base_url=f"http://127.0.0.1:{port}/v1",
            served_model="smollm2",
            tokenizer=local_tokenizer("smollm2"),
            name="smollm2",
            timeout=300,
        )
        served_base = np.array(loglikelihood(served, pairs, batch_size=8))
        with served.endpoint.serving("smollm2-ft"):
            served_ft = np.array(loglikelihood(served, pairs, batch_size=8))
        check = check_adapter(served.endpoint, served_adapter="smollm2-ft", cache_key="0" * 64)
    finally:
        stop(proc)

    per_token = np.abs(served_ft - local_ft) / np.array(tokens)
    local_effect, served_effect = local_ft - local_base, served_ft - served_base
    picks = [
        (int(np.argmax(local_ft[i : i + 4])), int(np.argmax(served_ft[i : i + 4]))) for i in range(0, len(pairs), 4)
    ]
    with capsys.disabled():
        print(
            f"\nserved adapter vs in-process PEFT on {len(pairs)} choices: |diff| per token max "
            f"{per_token.max():.3f}, mean {per_token.mean():.3f} nats; adapter effect mean |in-process| "
            f"{np.abs(local_effect).mean():.2f}, mean |served - in-process| {np.abs(served_effect - local_effect).mean():.2f} "
            f"nats, correlation {np.corrcoef(local_effect, served_effect)[0, 1]:.3f}; same pick on "
            f"{sum(a == b for a, b in picks)}/{len(picks)} questions"
        )
    assert np.abs(local_effect).mean() > 2.0  # the adapter matters on these items
    assert (per_token <= SERVED_ADAPTER_TOLERANCE_PER_TOKEN).all(), per_token.round(3)
    # the served adapter moves each item as the in-process one does (an ignored adapter
    # would move nothing: effect 0, correlation undefined, distance = the whole effect)
    assert np.corrcoef(local_effect, served_effect)[0, 1] > 0.95
    assert np.abs(served_effect - local_effect).mean() < 0.2 * np.abs(local_effect).mean()
    assert all(a == b for a, b in picks)
    assert check.startswith("unverified: the server's /v1/models entry names no adapter path")
