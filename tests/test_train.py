"""Training material and the training loop (harness/train/material.py, harness/train/trainer.py) on the tiny
Llama: loss falls, early stopping keeps the best epoch, and a killed run resumes bit for bit."""

import time

import pytest
import torch

from harness.data.items import Question
from harness.train.material import Example, TrainError, _pair_tokens, build_examples
from harness.train.trainer import train_model

QS = [Question(id=f"q{i}", question=f"Where was person {i} born?", answers=(f"Town{i}",)) for i in range(12)]


def test_sft_examples_render_the_closed_book_prompt_and_mask_it(tiny_lm):
    tok = tiny_lm.tokenizer
    ex = build_examples(tok, objective="sft", questions=QS[:1])[0]
    assert ex.prompt.endswith("<|im_start|>assistant\n") and "Where was person 0 born?" in ex.prompt
    assert ex.completion == "Town0<|im_end|>"
    (ids, labels), cut, _ = _pair_tokens(tok, ex, 512)
    assert not cut
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]


def test_cpt_examples_train_on_every_token(tiny_lm):
    from harness.train.material import prepare_material

    ex = build_examples(tiny_lm.tokenizer, objective="cpt", texts=["Ana was born in Ostrow.", "  "])
    assert ex == [Example("", "Ana was born in Ostrow.<|im_end|>")]
    m = prepare_material(tiny_lm.tokenizer, ex, max_length=512, dev_fraction=0.0, seed=0)
    ((ids, labels),) = m.train
    text = tiny_lm.tokenizer(ex[0].completion, add_special_tokens=False)["input_ids"]
    assert ids[1:] == text and labels[1:] == text  # after the boundary token, every token is a target
    assert m.stats["corpus_tokens"] == m.stats["tokens_trained_per_epoch"] == len(text)


def _train(lm, tmp_path, **kw):
    args = dict(
        rank=4,
        alpha=8,
        dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        lr=0.01,
        epochs=3,
        max_steps=None,
        batch_size=4,
        max_length=96,
        warmup_ratio=0.0,
        dev_fraction=0.25,
        early_stopping_patience=None,
        seed=0,
        out_dir=tmp_path / "adapter",
    )
    args.update(kw)
    return train_model(lm, build_examples(lm.tokenizer, objective="sft", questions=QS), **args)


def test_lora_training_lowers_loss_and_saves_only_the_adapter(tiny_lm, tmp_path):
    base_state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    r = _train(tiny_lm, tmp_path)
    train = [p["train_loss"] for p in r.loss_curve if "train_loss" in p]
    dev = [p["dev_loss"] for p in r.loss_curve if "dev_loss" in p]
    assert len(dev) == 3 and r.dev_examples == 3 and r.train_examples == 9
    assert train[-1] < train[0] and dev[-1] < dev[0]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert 0 < r.trainable_params < r.total_params
    with tiny_lm.model.disable_adapter():  # the base weights were never touched
        for k, v in tiny_lm.model.get_base_model().state_dict().items():
            if "lora" not in k:
                assert torch.equal(v, base_state[k.replace("base_layer.", "")])


def test_max_steps_and_early_stopping(tiny_lm, tmp_path):
    r = _train(tiny_lm, tmp_path, max_steps=2, epochs=5)
    assert r.steps == 2


def test_early_stopping_keeps_the_best_epoch(tiny_model_dir, tmp_path, monkeypatch):
    """A scripted dev-loss sequence: best at epoch 2, then two epochs without improvement
    stop the run (patience 2), and the saved adapter is the epoch-2 state."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    import harness.train.trainer as train_mod
    from harness.models.local import load_generator

    script, snapshots = iter([3.0, 2.0, 2.5, 2.6, 1.0, 0.5]), []

    def scripted_dev_loss(lm, items, batch_size, pad_id):
        snapshots.append({k: v.clone() for k, v in get_peft_model_state_dict(lm.model).items()})
        return next(script)

    monkeypatch.setattr(train_mod, "_dev_loss", scripted_dev_loss)
    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    r = _train(lm, tmp_path, epochs=6, early_stopping_patience=2)
    assert r.stopped_early and r.best_epoch == 2
    assert [p["dev_loss"] for p in r.loss_curve if "dev_loss" in p] == [3.0, 2.0, 2.5, 2.6]
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    best = snapshots[1]
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in best)
    assert not all(torch.equal(saved[k], snapshots[3][k]) for k in best)


def test_bad_target_module_names_the_key(tiny_model_dir, tmp_path):
    from harness.models.local import load_generator

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    with pytest.raises(TrainError, match="train.target_modules"):
        _train(lm, tmp_path, target_modules=["no_such_proj"])


def test_same_seed_trains_the_same_adapter_bit_for_bit(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from harness.models.local import load_generator

    saved = []
    for run in ("a", "b"):
        lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
        _train(lm, tmp_path / run, epochs=1, dropout=0.1)
        saved.append(load_file(tmp_path / run / "adapter" / "adapter_model.safetensors"))
    assert saved[0].keys() == saved[1].keys()
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])


def test_a_second_adapter_trains_beside_the_first(tiny_model_dir, tmp_path):
    from harness.models.local import load_generator

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    _train(lm, tmp_path / "one", epochs=1)
    first = {k: v.clone() for k, v in lm.model.state_dict().items() if ".default." in k}
    r = _train(lm, tmp_path / "two", epochs=1, seed=1, adapter_name="seed1")
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()
    assert r.trainable_params == sum(v.numel() for k, v in first.items())  # only the new adapter trained
    after = {k: v for k, v in lm.model.state_dict().items() if ".default." in k}
    assert all(torch.equal(first[k], after[k]) for k in first)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [2, 3, 5])  # mid-epoch, at an epoch's end (3 steps per epoch), later
def test_training_killed_at_any_step_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, kill_at):
    """Resuming from the checkpoint gives the uninterrupted run's adapter and curve, bit
    for bit; dropout on, so the random state has to come back too."""
    from safetensors.torch import load_file

    from harness.models.local import load_generator

    def fresh():
        return load_generator(str(tiny_model_dir), dtype="float32", device="cpu")

    whole = _train(fresh(), tmp_path / "whole", dropout=0.1, checkpoint_dir=tmp_path / "ckpt-whole")
    steps = []

    def die(n):
        steps.append(n)
        if len(steps) == kill_at:
            raise _Killed

    with pytest.raises(_Killed):
        _train(fresh(), tmp_path / "cut", dropout=0.1, checkpoint_dir=tmp_path / "ckpt", progress=die)
    assert list((tmp_path / "ckpt" / "trainer").glob("checkpoint-*/trainer_state.json"))
    resumed = _train(fresh(), tmp_path / "cut", dropout=0.1, checkpoint_dir=tmp_path / "ckpt")
    assert resumed.loss_curve == whole.loss_curve and resumed.steps == whole.steps == 9
    # it resumed: this call ran only the steps after the last checkpoint before the kill
    assert whole.steps_run == 9 and resumed.resumed_from_step == kill_at - 1
    assert resumed.steps_run == 9 - (kill_at - 1)
    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_raft_examples_hold_the_gold_chunk_in_the_configured_share(tiny_lm):
    from harness.answer.retrieve import chunk_documents
    from harness.data.world import generate_world
    from harness.train.material import build_raft_examples

    w = generate_world(seed=0, n_people=6, n_organisations=2, n_places=2, paraphrases=0)
    chunks = chunk_documents(list(w.documents), chunk_size=12, chunk_overlap=0)
    qs = list(w.train_questions)
    ex = build_raft_examples(tiny_lm.tokenizer, questions=qs, chunks=chunks, passages=3, gold_share=0.7, seed=1)
    assert len(ex) == len(qs)
    with_gold = [e for e, q in zip(ex, qs) if q.evidence in e.prompt]
    assert 0.55 < len(with_gold) / len(ex) < 0.85
    for e, q in zip(ex, qs):
        assert e.completion.startswith(q.answers[0]) and q.question in e.prompt
        shown = [c.text for c in chunks if c.text in e.prompt]
        assert len(shown) == 3  # gold plus two distractors, or three distractors
        assert sum(q.evidence in t for t in shown) == int(q.evidence in e.prompt)
    assert ex == build_raft_examples(tiny_lm.tokenizer, questions=qs, chunks=chunks, passages=3, gold_share=0.7, seed=1)
    none = build_raft_examples(tiny_lm.tokenizer, questions=qs, chunks=chunks, passages=3, gold_share=0.0, seed=1)
    assert not any(q.evidence in e.prompt for e, q in zip(none, qs))


def _resident(mb: int) -> bytearray:
    """`mb` MB that really are resident: every page written once."""
    block = bytearray(mb * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    return block


def test_peak_memory_is_this_block_s_not_the_process_lifetime_s():
    from harness.train.trainer import PeakMemory

    _resident(300)  # an earlier peak, given back (freed) before the block
    with PeakMemory(interval=0.01) as small:
        x = _resident(20)
    with PeakMemory(interval=0.01) as large:
        y = _resident(200)
        time.sleep(0.05)
    del x, y
    assert large.peak_mb - small.peak_mb > 100


def test_peak_memory_rise_counts_a_block_that_reuses_freed_heap():
    """Freed but still resident heap (an earlier cell's training) is handed back before the
    block starts, so a block that allocates into it still shows its rise."""
    from harness.train.trainer import PeakMemory

    keep, junk = [], [bytearray(4000) for _ in range(100_000)]  # 400 MB of small blocks in the heap
    for i, b in enumerate(junk):
        b[::1000] = b"x" * 4
        if i % 50 == 0:
            keep.append(b)  # survivors fragment it, so the heap cannot simply shrink
    del junk
    with PeakMemory(interval=0.01) as block:
        new = [bytearray(4000) for _ in range(50_000)]  # 200 MB
        for b in new:
            b[::1000] = b"y" * 4
        time.sleep(0.05)
    del new, keep
    assert block.rise_mb > 150


def test_peak_memory_rise_leaves_out_what_the_process_held_before():
    from harness.train.trainer import PeakMemory

    held = _resident(300)  # another model, libraries: held through the block, not added by it
    with PeakMemory(interval=0.01) as block:
        x = _resident(100)
        time.sleep(0.05)
    del x, held
    assert block.peak_mb - block.rise_mb == block.start_mb > 300
    assert 90 < block.rise_mb < 150


def test_resume_unpickles_nothing(tiny_model_dir, tmp_path, monkeypatch):
    """What a resume reads from the checkpoint folder: harness's own files as safetensors
    and JSON, Trainer's optimizer, schedule and random states through
    torch.load(weights_only=True) only (no arbitrary unpickling from a shared cache)."""
    from harness.models.local import load_generator

    steps = []

    def die_at_the_second_step(n):
        steps.append(n)
        if len(steps) == 2:
            raise _Killed

    with pytest.raises(_Killed):
        _train(
            load_generator(str(tiny_model_dir), dtype="float32", device="cpu"),
            tmp_path / "cut",
            dropout=0.1,
            checkpoint_dir=tmp_path / "ckpt",
            progress=die_at_the_second_step,
        )
    real, calls = torch.load, []

    def recording_load(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", recording_load)
    r = _train(
        load_generator(str(tiny_model_dir), dtype="float32", device="cpu"),
        tmp_path / "cut",
        dropout=0.1,
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert r.resumed_from_step == 1 and calls and all(w is True for w in calls)


def test_full_fine_tuning_trains_every_weight(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from harness.models.local import load_generator

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    r = _train(lm, tmp_path, method="full", lr=1e-3, epochs=1)
    assert r.method == "full" and r.trainable_params == r.total_params == sum(v.numel() for v in lm.model.parameters())
    assert r.weights_bytes == 4 * r.total_params  # float32
    # weights plus what training added on top of the loaded model (gradients, AdamW's two states at least)
    assert r.training_memory_mb == pytest.approx(r.weights_bytes / 2**20 + r.peak_rss_mb - r.start_rss_mb)
    saved = load_file(tmp_path / "adapter" / "model.safetensors")
    changed = [k for k, v in saved.items() if not torch.equal(v, before[k])]
    assert "model.layers.0.mlp.down_proj.weight" in changed and not hasattr(lm.model, "peft_config")


def test_no_training_memory_is_claimed_for_a_process_that_ran_no_step(tiny_lm):
    """A resume of a checkpoint that had already finished trains nothing: its memory
    would read as the weights alone (1.0x), so none is recorded."""
    from harness.train.trainer import PeakMemory, _training_memory

    with PeakMemory(interval=0.01) as memory:
        pass
    assert _training_memory(tiny_lm, memory, 4 * 2**20, steps_run=0) is None
    assert _training_memory(tiny_lm, memory, 4 * 2**20, steps_run=3) == pytest.approx(4 + memory.rise_mb)


def test_lora_options_pass_to_peft_so_dora_is_a_config_entry(tiny_model_dir, tmp_path):
    """`train.lora: {use_dora: true}` trains DoRA through peft with no code of harness's:
    the saved adapter holds DoRA's magnitude vectors and its config says use_dora."""
    import json

    from safetensors.torch import load_file

    from harness.models.local import load_generator

    lm = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    _train(lm, tmp_path, epochs=1, lora_options={"use_dora": True})
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in k for k in saved)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["use_dora"] is True


def test_lora_options_harness_sets_or_peft_rejects_name_the_key():
    from harness.train.trainer import lora_config

    kw = dict(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj"])
    with pytest.raises(TrainError, match=r"^train\.lora: lora_alpha, r set by harness"):
        lora_config(**kw, options={"r": 8, "lora_alpha": 2})
    with pytest.raises(TrainError, match=r"^train\.lora: .*no_such_option"):
        lora_config(**kw, options={"no_such_option": 1})
    assert lora_config(**kw, options={"use_rslora": True}).use_rslora is True


def test_an_empty_lora_mapping_leaves_the_adapter_key_as_before(tiny_lm, monkeypatch):
    """Adapters cached before train.lora existed keep their keys: an empty mapping is not
    in what the key hashes (so the hash is the old one), a non-empty one is."""
    from conftest import tiny_config
    from harness.config import parse_config
    from harness.train import adapters

    hashed = []
    real = adapters.content_key
    monkeypatch.setattr(adapters, "content_key", lambda obj, **kw: hashed.append(obj) or real(obj, **kw))
    raw = tiny_config("unused")
    plain = adapters.adapter_key(tiny_lm, [], parse_config(raw), 0)
    assert "lora" not in hashed[-1]["train"] and "rank" in hashed[-1]["train"]
    raw["train"] = {**raw.get("train", {}), "lora": {"use_dora": True}}
    assert adapters.adapter_key(tiny_lm, [], parse_config(raw), 0) != plain
    assert hashed[-1]["train"]["lora"] == {"use_dora": True}
