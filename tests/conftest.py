"""Shared fixtures: a tiny Llama and a locally trained tokenizer, built in the test
session (a few thousand parameters, no download), and a results/cache sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(folder: Path, corpus: list[str], *, hidden_size: int = 32) -> Path:
    """Train a byte-level BPE tokenizer on `corpus` and save it with a 2-layer Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _tiny_corpus() -> list[str]:
    from harness.answer.prompts import TEMPLATES
    from harness.data.world import generate_world

    world = generate_world(seed=0, n_people=4, n_organisations=2, n_places=2, paraphrases=2, n_unanswerable=4)
    corpus = (
        list(world.train_texts)
        + [q.question for q in world.questions]
        + [t.system + " " + t.user for t in TEMPLATES.values()]
    )
    return corpus * 3


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), _tiny_corpus())


@pytest.fixture(scope="session", autouse=True)
def _sandbox_cache(tmp_path_factory):
    """One cache for the whole session, outside the source tree and the user's home;
    session-scoped so that module-scoped fixtures see it too. No hub access, ever."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_wide_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama with 128-wide layers: bitsandbytes' packed CPU layout for 4-bit
    weights needs wider rows than the 32 of the usual one."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-wide"), _tiny_corpus(), hidden_size=128)


@pytest.fixture
def tiny_lm(tiny_model_dir):
    from harness.models.local import load_generator

    return load_generator(str(tiny_model_dir), dtype="float32", device="cpu")


def tiny_config(model_dir: Path, *, name: str = "tiny", **overrides) -> dict:
    """A raw config mapping for a fast end-to-end run on the tiny model."""
    raw = {
        "name": name,
        "seed": 0,
        "model": {"name": str(model_dir), "dtype": "float32", "device": "cpu"},
        "embedder": {"name": "hashing"},
        "data": {
            "world": {
                "seed": 0,
                "n_people": 3,
                "n_organisations": 2,
                "n_places": 2,
                "paraphrases": 1,
                "n_unanswerable": 4,
            }
        },
        "train": {
            "objective": "sft",
            "rank": 4,
            "alpha": 8,
            "epochs": 2,
            "batch_size": 8,
            "lr": 0.005,
            "max_length": 96,
        },
        "retrieval": {"chunk_size": 32, "top_k": 2},
        "eval": {"max_new_tokens": 6, "batch_size": 8, "bootstrap_samples": 200},
    }
    for key, value in overrides.items():
        raw[key] = value
    return raw


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under HARNESS_STRICT=1 (set by .ci/run) these skips are failures: each means CI lacks
# something it is meant to test (the shared data, Chromium, Ray in a loopback-only
# namespace, submitit, bitsandbytes, torchrun, Playwright, the llama.cpp server), so a green run
# would not have tested it. Other skips (no CUDA GPU) stay skips.
STRICT_SKIPS = (
    "shared/data",
    "Chromium",
    "unshare -n",
    "'ray'",
    "'submitit'",
    "'bitsandbytes'",
    "torchrun",
    "'playwright",
    "llama-cpp-python",
    "'mlflow'",
)


def _fail_what_must_not_skip(report) -> None:
    if os.environ.get("HARNESS_STRICT") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(s in reason for s in STRICT_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"HARNESS_STRICT=1: this must run in CI, not skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_what_must_not_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_what_must_not_skip(outcome.get_result())


# The integration tests: whole runs, real training, servers, Ray, torchrun, a browser, the
# lm-eval benchmarks and the bad-input matrix's command lines. Plain `pytest` leaves them
# out (pyproject.toml); `make test` and CI run them too. Whole modules by file name, and
# single tests of otherwise quick modules by name. One list, here, so a test file carries
# no marker boilerplate; tests/test_markers.py checks every name in it still exists.
INTEGRATION_MODULES = {
    "test_bad_inputs.py",
    "test_benchmarks.py",
    "test_cli.py",
    "test_concurrency.py",
    "test_destination.py",
    "test_distributed.py",
    "test_endpoint_server.py",
    "test_gguf_lora.py",
    "test_grid.py",
    "test_grid_selection.py",
    "test_human_eval.py",
    "test_methods.py",
    "test_own_documents.py",
    "test_package.py",
    "test_qlora.py",
    "test_real_models.py",
    "test_recovery.py",
    "test_report.py",
    "test_resume.py",
    "test_runner.py",
    "test_security.py",
    "test_strict.py",
    "test_tracking.py",
    "test_train.py",
}
INTEGRATION_TESTS = {
    "test_a_grid_over_the_six_scenarios_prints_the_measured_decision_table",
    "test_harness_plan_prints_the_items_table_without_a_pilot",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the integration tests before `-m` selects among them."""
    for item in items:
        if item.path.name in INTEGRATION_MODULES or item.originalname in INTEGRATION_TESTS:
            item.add_marker(pytest.mark.integration)
