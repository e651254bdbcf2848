"""Loading and running a model (harness/models/local.py) on the tiny test Llama: batched generation
and log-likelihoods equal one-at-a-time computation, and a missing model is a one-line error."""

import math

import pytest
import torch

from harness.models.local import ModelError, generate, load_generator, loglikelihood, resolve_dtype


def test_batched_generation_equals_one_at_a_time(tiny_lm):
    prompts = ["Where was Ana born?", "What is the trade of the Zuna Guild in the old town?", "Who?"]
    batched = generate(tiny_lm, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(tiny_lm, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.prompt_tokens for g in batched] == [len(tiny_lm.tokenizer(p)["input_ids"]) for p in prompts]
    assert all(0 <= g.new_tokens <= 6 for g in batched)


def test_loglikelihood_matches_a_direct_computation(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    ctx, cont = "Where was Ana born? Answer:", " Ostrow"
    ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
    expected = sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx_ids), len(whole)))
    got = loglikelihood(tiny_lm, [(ctx, cont), ("Who plays the harp?", " Bo"), (ctx, cont)], batch_size=2)
    assert got[0] == pytest.approx(expected, abs=1e-4)
    assert got[2] == pytest.approx(got[0], abs=1e-5)  # batch composition does not change a score
    assert all(x < 0 and math.isfinite(x) for x in got)


def test_trailing_context_space_moves_to_the_continuation(tiny_lm):
    a = loglikelihood(tiny_lm, [("Question: where? Answer: ", "Ostrow")], batch_size=1)
    b = loglikelihood(tiny_lm, [("Question: where? Answer:", " Ostrow")], batch_size=1)
    assert a == pytest.approx(b)


def test_dtype_resolution_is_explicit():
    assert resolve_dtype("float32", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert resolve_dtype("auto", "cpu") in ("float32", "bfloat16")


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_generator(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelError, match="GGUF file not found"):
        load_generator(str(tmp_path / "x.gguf"))


def test_local_dir_fingerprint_is_content_based(tiny_model_dir, tiny_lm):
    again = load_generator(str(tiny_model_dir), dtype="float32", device="cpu")
    assert again.fingerprint == tiny_lm.fingerprint and len(again.fingerprint) == 64


def test_shared_context_scoring_equals_separate_passes(tiny_lm):
    """Choices of one question share the context pass; scores must not change."""
    ctx = "Which province contains Ostrow? Answer:"
    choices = [" Vel", " Drithobriand province", " Kree", " the long river of the north"]
    shared = loglikelihood(tiny_lm, [(ctx, c) for c in choices] + [("Other question?", " Yes")], batch_size=4)
    alone = [loglikelihood(tiny_lm, [(ctx, c)], batch_size=1)[0] for c in choices]
    assert shared[:4] == pytest.approx(alone, abs=1e-4)
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    for c, got in zip(choices, alone):
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        whole = tok(ctx + c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
        assert got == pytest.approx(
            sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx_ids), len(whole))), abs=1e-4
        )


def test_a_near_miss_of_an_embedded_name_is_a_typo_not_a_download():
    with pytest.raises(ModelError, match="did you mean 'smollm2'"):
        load_generator("smolm2")
