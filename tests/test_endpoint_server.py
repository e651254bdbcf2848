"""The endpoint backend against a real OpenAI-compatible server: llama-cpp-python's server
on the embedded SmolLM2 GGUF, started by the test on 127.0.0.1 (see README, "Serving",
for why this server). Skipped only when llama-cpp-python is not installed.

Covered: greedy generation and token usage; log-likelihood parity with the in-process
backend on the same items; answers cached by model identity (a second run, against a
server on another port, sends no request); the server going down mid-run (one-line
error, finished batches kept, the resumed run asks only for the rest and gives the same
answers); the API key sent from the environment and never written to results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

from harness.answer.pipelines import answer  # noqa: E402
from harness.data.world import generate_world  # noqa: E402
from harness.models.endpoint import EndpointError, connect, local_tokenizer  # noqa: E402
from harness.models.local import embedded_gguf  # noqa: E402
from harness.store.memo import Memo  # noqa: E402
from tests.test_endpoint import free_port  # noqa: E402

# Per continuation token, the server's log-likelihood may differ from the in-process one
# by this much (nats): both run the same Q4_1 weights, in-process dequantised to float32,
# llama.cpp with quantised dot products (activations rounded to 8 bits). Measured on these
# items: at most 0.19 per token, 0.87 on a 6-token choice.
LOGLIK_TOLERANCE_PER_TOKEN = 0.25


def start_server(port: int, *, api_key: str | None = None, config_file: Path | None = None) -> subprocess.Popen:
    """llama-cpp-python's server on 127.0.0.1:`port`: the embedded SmolLM2 as `smollm2`,
    or the models of `config_file` (whose host and port must be these)."""
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_gguf("smollm2")),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
        "--logits_all",
        "true",
        "--verbose",
        "false",
    ]
    if config_file is not None:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_file)]
    if api_key:
        cmd += ["--api_key", api_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers=headers), timeout=2
            ):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not start in 180 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_server(port)
    yield f"http://127.0.0.1:{port}/v1"
    stop(proc)


@pytest.fixture(scope="module")
def tokenizer():
    return local_tokenizer("smollm2")


@pytest.fixture(scope="module")
def questions():
    world = generate_world(seed=0, n_people=3, n_organisations=1, n_places=1, paraphrases=0, n_unanswerable=2)
    return [q for q in world.questions if q.choices][:6]


def served(url, tokenizer, **kw):
    return connect(base_url=url, served_model="smollm2", tokenizer=tokenizer, name="smollm2", **kw)


def test_generation_is_greedy_and_counts_tokens(server, tokenizer, questions):
    from harness.answer.prompts import TEMPLATES, render
    from harness.models.local import generate

    lm = served(server, tokenizer)
    prompts = [render(tokenizer, TEMPLATES["closed_book"], question=q.question) for q in questions[:2]]
    first = generate(lm, prompts, max_new_tokens=8, batch_size=2)
    again = generate(lm, prompts, max_new_tokens=8, batch_size=2)
    assert [g.text for g in first] == [g.text for g in again] and all(g.text for g in first)
    assert all(
        g.prompt_tokens == len(tokenizer(p, add_special_tokens=False)["input_ids"]) for g, p in zip(first, prompts)
    )  # the server saw the same tokens as the local tokenizer
    assert all(0 < g.new_tokens <= 8 for g in first)
    usage = lm.endpoint.take_usage()
    assert usage["prompt_tokens"] == 2 * sum(g.prompt_tokens for g in first)
    assert lm.endpoint.requests == 1 + 4  # the model list, then one request per prompt and pass


def test_loglikelihood_parity_with_in_process(server, tokenizer, questions):
    from harness.answer.prompts import TEMPLATES, render
    from harness.models.local import load_generator, loglikelihood

    pairs = [
        (render(tokenizer, TEMPLATES["closed_book"], question=q.question), c) for q in questions for c in q.choices
    ]
    remote = loglikelihood(served(server, tokenizer), pairs, batch_size=8)
    local = loglikelihood(load_generator("smollm2", dtype="float32", device="cpu"), pairs, batch_size=8)
    for (ctx, cont), r, l_ in zip(pairs, remote, local):
        n = len(tokenizer(ctx + cont, add_special_tokens=False)["input_ids"]) - len(
            tokenizer(ctx, add_special_tokens=False)["input_ids"]
        )
        assert abs(r - l_) <= LOGLIK_TOLERANCE_PER_TOKEN * n, (cont, r, l_)
    for i in range(0, len(pairs), 4):  # the same choice wins wherever the in-process margin exceeds the noise
        r, l_ = remote[i : i + 4], local[i : i + 4]
        top, second = sorted(l_)[-1], sorted(l_)[-2]
        if top - second > 2 * LOGLIK_TOLERANCE_PER_TOKEN * 6:
            assert r.index(max(r)) == l_.index(max(l_))
    assert sum(
        a == b
        for a, b in zip(
            [r.index(max(r)) for r in (remote[i : i + 4] for i in range(0, len(pairs), 4))],
            [l_.index(max(l_)) for l_ in (local[i : i + 4] for i in range(0, len(pairs), 4))],
        )
    ) == len(questions)  # on these items every pick agrees


def test_cache_by_identity_and_resume_after_the_server_dies(tmp_path, tokenizer, questions):
    questions = questions[:4]  # two batches of two
    run = dict(adapter=False, retriever=None, top_k=1, max_new_tokens=6, batch_size=2, multiple_choice=True)
    port = free_port()
    proc = start_server(port)
    try:
        lm = served(f"http://127.0.0.1:{port}/v1", tokenizer, retries=1, timeout=300)
        whole = answer(lm, questions, **run)  # no memo: the reference answers
        namespace = {"model": lm.fingerprint, "adapter": None}

        def kill_after_first_batch(n):
            proc.terminate()
            proc.wait()

        memo = Memo("generations", namespace=namespace, root=tmp_path)
        with pytest.raises(EndpointError, match=r"model.base_url: .* failed after 2 attempt\(s\)"):
            answer(lm, questions, memo=memo, progress=kill_after_first_batch, **run)
        assert memo.computed == 1  # the batch finished before the server died is on disk
    finally:
        stop(proc)

    port2 = free_port()  # the same model behind another port: same identity, same cache
    proc = start_server(port2)
    try:
        lm2 = served(f"http://127.0.0.1:{port2}/v1", tokenizer)
        assert lm2.fingerprint == lm.fingerprint
        memo = Memo("generations", namespace=namespace, root=tmp_path)
        resumed = answer(lm2, questions, memo=memo, **run)
        assert memo.counts() == {"reused": 1, "computed": 1}
        asked = lm2.endpoint.requests
        assert asked == 1 + 2 * (1 + 4)  # model list; per remaining question one generation and 4 choices
        assert [(r["output"], r["choice_logliks"]) for r in resumed] == [
            (r["output"], r["choice_logliks"]) for r in whole
        ]

        again = answer(lm2, questions, memo=Memo("generations", namespace=namespace, root=tmp_path), **run)
        assert lm2.endpoint.requests == asked  # everything from the cache: nothing asked
        assert [r["output"] for r in again] == [r["output"] for r in whole]
    finally:
        stop(proc)


def test_api_key_from_the_environment_never_written(tmp_path, monkeypatch):
    from harness.config import parse_config
    from harness.run.runner import run_experiment

    secret = "sk-harness-test-0123456789"
    port = free_port()
    proc = start_server(port, api_key=secret)
    try:
        raw = {
            "name": "served",
            "output_dir": str(tmp_path / "results"),
            "embedder": {"name": "hashing"},
            "model": {
                "name": "smollm2",
                "backend": "endpoint",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "served_model": "smollm2",
                "api_key_env": "HARNESS_TEST_KEY",
                "retries": 0,
                "timeout": 900,
            },
            "data": {
                "world": {
                    "seed": 0,
                    "n_people": 2,
                    "n_organisations": 1,
                    "n_places": 1,
                    "paraphrases": 0,
                    "n_unanswerable": 2,
                },
                "max_questions": 3,
            },
            "retrieval": {"chunk_size": 32, "top_k": 2},
            "eval": {"pipelines": ["base", "rag"], "max_new_tokens": 6, "batch_size": 4, "bootstrap_samples": 200},
        }
        monkeypatch.setenv("HARNESS_TEST_KEY", "wrong")
        with pytest.raises(EndpointError, match="HTTP 401"):
            run_experiment(parse_config(raw))
        monkeypatch.setenv("HARNESS_TEST_KEY", secret)
        out = run_experiment(parse_config(raw))
    finally:
        stop(proc)
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["endpoint"]["mc_protocol"] == "loglikelihood"
    assert m["costs"]["pipelines"]["rag"]["served_tokens"]["prompt_tokens"] > 0
    for path in Path(out).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".md", ".html"):
            assert secret not in path.read_text(), path
    assert "HARNESS_TEST_KEY" in (out / "config.yaml").read_text()  # the variable's name is recorded
    assert os.environ["HARNESS_TEST_KEY"] == secret
