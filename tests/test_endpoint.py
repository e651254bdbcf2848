"""The endpoint backend without a model server: config rules, and the one-line errors
for a server that is down, answers garbage, or needs a key that is not set. The tests
against a real server are in test_endpoint_server.py."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import ConfigError, parse_config
from harness.models.endpoint import Endpoint, EndpointError, connect, letter_question, parse_letter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_model(url: str, **extra) -> dict:
    return {"name": "smollm2", "backend": "endpoint", "base_url": url, "served_model": "smollm2", **extra}


def test_endpoint_config_rules():
    ok = parse_config(
        {"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1"), "eval": {"pipelines": ["base", "rag"]}}
    )
    assert ok.model.backend == "endpoint" and ok.model.retries == 3
    with pytest.raises(ConfigError, match="model: Value error, model.backend 'endpoint' needs"):
        parse_config({"name": "x", "model": {"backend": "endpoint"}})
    with pytest.raises(ConfigError, match="served_adapter"):  # fine-tuned arms need the served adapter's name
        parse_config({"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1")})
    with pytest.raises(ConfigError, match="mc_protocol: letter"):
        parse_config(
            {"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1", api="chat"), "eval": {"pipelines": ["base"]}}
        )
    with pytest.raises(ConfigError, match="need model.backend: endpoint"):
        parse_config({"name": "x", "model": {"base_url": "http://127.0.0.1:1/v1"}})


def test_server_down_is_one_line_and_exit_2(tmp_path, capsys, tiny_model_dir):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "output_dir": str(tmp_path / "results"),
                "embedder": {"name": "hashing"},
                "model": {**endpoint_model(url, retries=1, timeout=2), "name": str(tiny_model_dir)},
                "eval": {"pipelines": ["base"]},
            }
        )
    )
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error: model.base_url:") and url in err and "\n" not in err
    assert "2 attempt(s)" in err  # one retry
    assert not (tmp_path / "results" / "x").exists()


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # a web server that is not an OpenAI API
        body = b"<html>hello</html>" if self.path.endswith("/models") else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_garbage_reply_is_a_clear_error():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EndpointError, match=r"failed after 2 attempt\(s\): not JSON"):
            connect(
                base_url=f"http://127.0.0.1:{server.server_port}/v1",
                served_model="m",
                tokenizer=None,
                name="m",
                retries=1,
            )
    finally:
        server.shutdown()


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_KEY", raising=False)
    ep = Endpoint(
        base_url="http://127.0.0.1:1/v1",
        served_model="m",
        api="completions",
        api_key_env="HARNESS_TEST_KEY",
        timeout=1,
        retries=0,
        concurrency=1,
    )
    with pytest.raises(EndpointError, match="HARNESS_TEST_KEY is not set"):
        ep.request("/models")


def test_identity_ignores_start_time_and_url():
    a = Endpoint(
        base_url="http://127.0.0.1:1/v1",
        served_model="m",
        api="completions",
        api_key_env=None,
        timeout=1,
        retries=0,
        concurrency=1,
        model_entry={"id": "m", "root": "/models/x", "created": 1},
    )
    b = Endpoint(
        base_url="http://127.0.0.1:2/v1",
        served_model="m",
        api="completions",
        api_key_env=None,
        timeout=1,
        retries=0,
        concurrency=1,
        model_entry={"id": "m", "root": "/models/x", "created": 2},
    )
    c = Endpoint(
        base_url="http://127.0.0.1:1/v1",
        served_model="m",
        api="completions",
        api_key_env=None,
        timeout=1,
        retries=0,
        concurrency=1,
        model_entry={"id": "m", "root": "/models/y", "created": 1},
    )
    assert a.identity() == b.identity() != c.identity()


def test_letter_protocol_parsing():
    q = letter_question("Where?", ["Oslo", "Rome", "Lima"])
    assert "A. Oslo\nB. Rome\nC. Lima" in q
    assert parse_letter("B", 3) == 1 and parse_letter("(c) Lima", 3) == 2 and parse_letter("A.", 3) == 0
    assert parse_letter("D", 3) is None and parse_letter("I think so", 3) is None
    assert json.loads(json.dumps(q)) == q


def _models_server(listing: dict):
    class Handler(_Garbage):
        def do_GET(self):
            body = json.dumps(listing).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_served_adapter_is_checked_against_its_cache_key():
    from harness.models.endpoint import check_adapter

    key = "0123456789abcdef" * 4
    # what vLLM lists for --lora-modules NAME=PATH: the adapter's id, its path as root, the base as parent
    listing = {
        "object": "list",
        "data": [
            {"id": "base", "object": "model", "root": "/models/base", "created": 1},
            {"id": "ours", "object": "model", "root": f"/cache/adapters/{key[:32]}", "parent": "base"},
            {"id": "other", "object": "model", "root": f"/cache/adapters/{'f' * 32}", "parent": "base"},
            {"id": "elsewhere", "object": "model", "root": "/srv/lora/ft", "parent": "base"},
        ],
    }
    server = _models_server(listing)
    try:
        ep = Endpoint(
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            served_model="base",
            api="completions",
            api_key_env=None,
            timeout=5,
            retries=0,
            concurrency=1,
        )
        assert check_adapter(ep, served_adapter="ours", cache_key=key) == "matches"
        assert check_adapter(ep, served_adapter="elsewhere", cache_key=key).startswith("unverified")
        with pytest.raises(EndpointError, match="whose cache key is not this run's adapter"):
            check_adapter(ep, served_adapter="other", cache_key=key)
        with pytest.raises(EndpointError, match="does not serve 'missing'"):
            check_adapter(ep, served_adapter="missing", cache_key=key)
    finally:
        server.shutdown()


def test_the_logged_llama_cpp_line_survives_paths_with_quotes_and_spaces(tmp_path):
    """Run the logged line through a shell with stand-ins for `harness` and `python`: each
    gets its paths whole, and the server config written holds the path, backslash and all."""
    import subprocess

    from harness.models.endpoint import llama_cpp_serve_command

    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    bin_dir.mkdir()
    for name in ("harness", "python"):
        stub = bin_dir / name
        stub.write_text(
            f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        )
        stub.chmod(0o755)
    adapter = str(tmp_path / "it's a \\cache" / ("0123456789abcdef" * 2))  # dash's echo would eat "\c"
    (tmp_path / "it's a \\cache").mkdir()
    line = llama_cpp_serve_command(
        base_gguf="/m/o'brien model.gguf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter
    )
    subprocess.run(["sh", "-c", line], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    export, server = [json.loads(x) for x in log.read_text().splitlines()]
    assert export == ["export-lora", adapter, "--base", "/m/o'brien model.gguf", "--out", f"{adapter}.gguf"]
    assert server == ["-m", "llama_cpp.server", "--config_file", f"{adapter}.server.json"]
    config = json.loads(Path(f"{adapter}.server.json").read_text())
    assert config["models"][1]["lora_path"] == f"{adapter}.gguf"


def test_llama_cpp_route_for_the_served_adapter(tmp_path):
    """The llama.cpp variant of the serve command: export, a two-alias server config on
    loopback, the server; and what check_adapter says of llama-cpp-python's model list."""
    from harness.models.endpoint import base_gguf, check_adapter, llama_cpp_server_config, serve_command
    from harness.models.local import embedded_gguf

    key = "0123456789abcdef" * 4
    adapter = f"/cache/adapters/{key[:32]}"
    assert base_gguf("smollm2") == str(embedded_gguf("smollm2"))
    assert base_gguf("/m/x.gguf") == "/m/x.gguf" and base_gguf("HuggingFaceTB/SmolLM2-135M") is None
    vllm_only = serve_command(base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter)
    assert "llama" not in vllm_only and f"--lora-modules sm-ft={adapter}" in vllm_only
    for rank, flag in ((4, 8), (8, 8), (64, 64), (200, 256)):  # train.rank, vLLM's next allowed value
        line = serve_command(
            base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter, lora_rank=rank
        )
        assert f" --max-lora-rank {flag} " in line, rank
    too_big = serve_command(
        base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter, lora_rank=1024
    )
    assert too_big == "(not vLLM: it serves LoRA ranks up to 512, and train.rank is 1024)"
    both = serve_command(
        base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter, base_gguf="/m/x.gguf"
    )
    assert both.startswith(vllm_only)
    llama = both.split("or with llama.cpp (CPU): ")[1]
    assert llama.startswith(f"harness export-lora {adapter} --base /m/x.gguf --out {adapter}.gguf && printf ")
    assert llama.endswith(f"python -m llama_cpp.server --config_file {adapter}.server.json")
    config = json.loads(shlex.split(llama.split(" && ")[1])[2])
    assert config == llama_cpp_server_config(
        base_gguf="/m/x.gguf", served_model="sm", served_adapter="sm-ft", lora_gguf=f"{adapter}.gguf"
    )
    assert config["host"] == "127.0.0.1"
    assert [(m["model_alias"], m["model"], m.get("lora_path"), m["logits_all"]) for m in config["models"]] == [
        ("sm", "/m/x.gguf", None, True),
        ("sm-ft", "/m/x.gguf", f"{adapter}.gguf", True),
    ]

    # what llama-cpp-python lists: aliases only, no path to check the cache key against
    listing = {
        "object": "list",
        "data": [{"id": m, "object": "model", "owned_by": "me", "permissions": []} for m in ("sm", "sm-ft")],
    }
    server = _models_server(listing)
    try:
        ep = Endpoint(
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            served_model="sm",
            api="completions",
            api_key_env=None,
            timeout=5,
            retries=0,
            concurrency=1,
        )
        assert check_adapter(ep, served_adapter="sm-ft", cache_key=key) == (
            "unverified: the server's /v1/models entry names no adapter path (llama-cpp-python lists only "
            f"aliases); its config's lora_path should be {key[:32]}.gguf"
        )
    finally:
        server.shutdown()


# -- a fake OpenAI-compatible server, and what a hostile or broken one can do --------------
def _send(handler, body: bytes, *, status: int = 200, headers: tuple = ()) -> None:
    handler.send_response(status)
    for k, v in headers or (("Content-Length", str(len(body))),):
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def valid_reply(route: str, payload: dict | None) -> dict:
    """What a working server answers: its model list; a generation; for an echo request
    the prompt echoed one character per token, each of log-probability -0.5, then one
    generated token."""
    if route == "/models":
        return {"object": "list", "data": [{"id": "smollm2", "object": "model", "created": 1}]}
    if route == "/chat/completions":
        return {
            "choices": [{"message": {"role": "assistant", "content": " Mira"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1},
        }
    prompt = payload["prompt"]
    if payload.get("echo"):
        tokens = list(prompt) + [" x"]
        return {
            "choices": [
                {
                    "text": prompt + " x",
                    "logprobs": {"tokens": tokens, "token_logprobs": [None] + [-0.5] * (len(tokens) - 1)},
                }
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1},
        }
    return {"choices": [{"text": " Mira Tolland"}], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


def _broken(change):
    """A fault that answers the model list as a working server does and changes every
    completion reply (`change(reply, payload)` returns the reply, or the body's bytes)."""

    def fault(handler, route, payload):
        reply = valid_reply(route, payload)
        if route != "/models":
            reply = change(reply, payload)
        _send(handler, reply if isinstance(reply, bytes) else json.dumps(reply).encode())

    return fault


def _on_echo(change):
    """A fault of the log-likelihood replies only (generation works)."""
    return _broken(lambda r, p: change(r, p) if p.get("echo") else r)


def _logprobs(value):
    def change(reply, payload):
        reply["choices"][0]["logprobs"]["token_logprobs"][-2] = value
        return reply

    return change


def _trickle(handler, *, head: bool, seconds: float = 1.0, limit: int = 15) -> None:
    """One byte every `seconds` (at most `limit`, so an old client is not held for ever):
    of the status line and headers, or of a body announced whole."""
    body = json.dumps(valid_reply("/models", None)).encode()
    head_bytes = f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    if not head:
        handler.wfile.write(head_bytes)
    for b in (head_bytes if head else body)[:limit]:
        handler.wfile.write(bytes([b]))
        handler.wfile.flush()
        time.sleep(seconds)


def _huge(handler, route, payload):
    if route == "/models":
        return _send(handler, json.dumps(valid_reply(route, payload)).encode())
    _send(handler, b"{" + b" " * 1000, headers=(("Content-Length", str(1 << 30)),))


def _redirect(handler, route, payload):
    _send(handler, b"", status=302, headers=(("Location", handler.fake.redirect_to + route), ("Content-Length", "0")))


FAULTS = {
    "ok": _broken(lambda r, p: r),
    "html": _broken(lambda r, p: b"<html><body>502 Bad Gateway</body></html>"),
    "array": _broken(lambda r, p: [r]),
    "no-choices": _broken(lambda r, p: {"object": "text_completion", "usage": r["usage"]}),
    "empty-choices": _broken(lambda r, p: {**r, "choices": []}),
    "text-number": _broken(lambda r, p: {**r, "choices": [{"text": 42}]} if not p.get("echo") else r),
    "usage-negative": _broken(lambda r, p: {**r, "usage": {"prompt_tokens": -7, "completion_tokens": 2}}),
    "usage-fraction": _broken(lambda r, p: {**r, "usage": {"prompt_tokens": 7, "completion_tokens": 2.5}}),
    "usage-text": _broken(lambda r, p: {**r, "usage": "lots"}),
    "nan-logprob": _on_echo(_logprobs(float("nan"))),  # json.dumps writes the NaN literal
    "overflow-logprob": _on_echo(
        lambda r, p: json.dumps(_logprobs(-12345.0)(r, p)).replace("-12345.0", "-1e999").encode()
    ),
    "text-logprob": _on_echo(_logprobs("very likely")),
    "no-logprobs": _on_echo(lambda r, p: {**r, "choices": [{"text": r["choices"][0]["text"]}]}),
    "short-logprobs": _on_echo(lambda r, p: (r["choices"][0]["logprobs"]["token_logprobs"].pop(), r)[1]),
    "number-tokens": _on_echo(lambda r, p: (r["choices"][0]["logprobs"].update(tokens=[1] * len(p["prompt"])), r)[1]),
    "deep": _broken(lambda r, p: b"[" * 200_000 + b"]" * 200_000),
    "not-utf8": _broken(lambda r, p: b'{"choices": [{"text": "\xff\xfe"}]}'),
    "models-not-objects": lambda h, route, p: _send(h, b'{"object": "list", "data": [1, 2]}'),
    "huge": _huge,
    "redirect": _redirect,
    "trickle-head": lambda h, route, p: _trickle(h, head=True),
    "trickle-body": lambda h, route, p: _trickle(h, head=False),
}


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    fake: "FakeServer"

    def do_GET(self):
        self._answer(None)

    def do_POST(self):
        self._answer(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))

    def _answer(self, payload):
        _, fault, *rest = self.path.split("/")
        self.fake.seen.append({"path": self.path, "headers": dict(self.headers)})
        route = "/" + "/".join(rest[1:])  # after /v1
        try:
            FAULTS.get(fault, FAULTS["ok"])(self, route, payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: as it should
            pass

    def log_message(self, *args):
        pass


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 whose fault (a key of FAULTS) is the first
    segment of the address: `url("nan-logprob")` is http://127.0.0.1:PORT/nan-logprob/v1.
    It records every request's path and headers in `seen`."""

    def __init__(self, redirect_to: str = "", tls=None):
        self.seen: list[dict] = []
        self.redirect_to = redirect_to
        self.scheme = "https" if tls is not None else "http"
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_FakeHandler,), {"fake": self}))
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, fault: str = "ok") -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_port}/{fault}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def fake():
    thief = FakeServer()  # another origin: another port
    server = FakeServer(redirect_to=thief.url("stolen"))
    server.thief = thief
    yield server
    server.close()
    thief.close()


def _endpoint(url: str, **kw) -> Endpoint:
    return Endpoint(
        **{
            "base_url": url,
            "served_model": "smollm2",
            "api": "completions",
            "api_key_env": None,
            "timeout": 5,
            "retries": 0,
            "concurrency": 1,
            **kw,
        }
    )


def test_the_fake_server_is_a_working_api(fake):
    """The faults below differ from this by one thing each."""
    lm = connect(base_url=fake.url(), served_model="smollm2", tokenizer=None, name="smollm2", retries=0)
    assert lm.endpoint.generate(["Q?"], max_new_tokens=4)[0].text == "Mira Tolland"
    assert lm.endpoint.loglikelihood([("Who? ", "Mira"), ("Who?", " Ilse V")]) == [-2.5, -3.5]
    assert lm.endpoint.take_usage() == {"prompt_tokens": 7 + 9 + 11, "completion_tokens": 2 + 1 + 1}


def test_no_redirect_is_followed_and_the_key_stays_home(fake, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_KEY", "sk-redirect-SECRET")
    ep = _endpoint(fake.url("redirect"), api_key_env="HARNESS_TEST_KEY", retries=3)
    with pytest.raises(EndpointError) as err:
        ep.request("/models")
    assert str(err.value) == (
        f"model.base_url: {fake.url('redirect')}/models failed after 1 attempt(s): HTTP 302 redirecting to "
        f"{fake.thief.url('stolen')}/models; harness follows no redirect, since the request carries the API key: "
        "set model.base_url to the server's own address"
    )
    with pytest.raises(EndpointError, match="HTTP 302 redirecting"):  # a POST (urllib would follow a 307 too)
        ep.request("/completions", {"prompt": "x"})
    assert fake.thief.seen == []  # nothing reached the other origin, with or without the key
    assert [s["headers"].get("Authorization") for s in fake.seen if s["path"].startswith("/redirect/")] == [
        "Bearer sk-redirect-SECRET"
    ] * 2  # the server asked for sent it once per call: no retry of a 3xx


@pytest.mark.parametrize(
    "url, problem",
    [
        ("file:///etc/passwd", "is not an http:// or https:// address"),
        ("ftp://127.0.0.1/v1", "is not an http:// or https:// address"),
        ("127.0.0.1:8000/v1", "is not an http:// or https:// address"),
        ("localhost:8000/v1", "is not an http:// or https:// address"),
        ("http:///v1", "names no host"),
        ("http://127.0.0.1:99999999/v1", "invalid port"),
        ("http://me:hunter2@127.0.0.1:8000/v1", "holds a user name or password"),
        ("http://127.0.0.1:8000/v1?key=abc", "has a query or fragment"),
        ("http://127.0.0.1:8000/v1\r\nX: y", "without spaces or control characters"),
    ],
)
def test_only_http_server_addresses(url, problem):
    for raw in ({"model": endpoint_model(url)}, {"eval": {"judge": {"model": endpoint_model(url)}}}):
        with pytest.raises(ConfigError, match=r"base_url: Value error, .*" + re.escape(problem)) as err:
            parse_config({"name": "x", **raw})
        assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(EndpointError, match=re.escape(problem)):  # the client refuses them too
        _endpoint(url)
    for ok in ("http://127.0.0.1:8000/v1", "HTTPS://example.invalid/v1", "http://[::1]:8000/v1"):
        assert parse_config({"name": "x", "model": endpoint_model(ok), "eval": {"pipelines": ["base"]}})


def test_retries_and_timeout_are_bounded():
    for bad, key in (
        ({"retries": 1_000_000}, "retries"),
        ({"retries": 21}, "retries"),
        ({"retries": -1}, "retries"),
        ({"timeout": 1e9}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"concurrency": 10_000}, "concurrency"),
    ):
        with pytest.raises(ConfigError, match=rf"model\.{key}: "):
            parse_config(
                {"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1", **bad), "eval": {"pipelines": ["base"]}}
            )
    ok = parse_config(
        {
            "name": "x",
            "model": endpoint_model("http://127.0.0.1:1/v1", retries=20, timeout=3600),
            "eval": {"pipelines": ["base"]},
        }
    )
    assert (ok.model.retries, ok.model.timeout) == (20, 3600)


def test_backoff_is_bounded(monkeypatch):
    """20 retries against a server that is down wait at most 8 s each (jitter included,
    12 s), about 3 minutes in all."""
    import harness.models.endpoint as endpoint

    waits = []
    monkeypatch.setattr(endpoint.time, "sleep", waits.append)
    ep = _endpoint(f"http://127.0.0.1:{free_port()}/v1", retries=20, timeout=1)
    with pytest.raises(EndpointError, match=r"failed after 21 attempt\(s\): URLError"):
        ep.request("/models")
    assert len(waits) == 20 and max(waits) <= 12.0
    assert sum(waits) <= 1.5 * (0.25 + 0.5 + 1 + 2 + 4 + 8 * 15) < 3.2 * 60  # README: under 3.2 minutes
    assert min(waits[6:]) >= 8.0  # the cap is reached, not an accident of jitter
    assert ep.requests == 21


@pytest.mark.parametrize(
    "key, what",
    [
        ("sk-SECRET\r\nX: y", "a carriage return (CR) at character 10"),
        ("sk-SECRET\n", "a line feed (LF) at character 10"),
        ("sk-SECRET\x1b[2J", "a control character at character 10"),
        ("sk-SECRET sk", "a space at character 10"),
        ("sk-SECRET\u00e9", "a non-ASCII character at character 10"),
    ],
)
def test_a_key_with_a_line_end_is_refused_without_printing_it(fake, monkeypatch, key, what):
    monkeypatch.setenv("HARNESS_TEST_KEY", key)
    before = len(fake.seen)
    with pytest.raises(EndpointError) as err:
        _endpoint(fake.url(), api_key_env="HARNESS_TEST_KEY").request("/models")
    assert str(err.value) == (
        f"model.api_key_env: the key in $HARNESS_TEST_KEY has {what}; an API key is visible "
        "ASCII (a line end copied from a file?); it was not sent"
    )
    assert "SECRET" not in str(err.value) and len(fake.seen) == before  # nothing sent


def test_a_server_echoing_the_key_does_not_get_it_printed(monkeypatch):
    class Echo(_Garbage):
        def do_GET(self):
            _send(self, f"denied: {self.headers['Authorization']}".encode(), status=401)

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HARNESS_TEST_KEY", "sk-echoed-SECRET")
    try:
        with pytest.raises(EndpointError) as err:
            _endpoint(f"http://127.0.0.1:{server.server_port}/v1", api_key_env="HARNESS_TEST_KEY").request("/models")
    finally:
        server.shutdown()
    assert str(err.value).endswith("failed after 1 attempt(s): HTTP 401: denied: Bearer <API key>")


@pytest.mark.parametrize("fault", ["trickle-head", "trickle-body"])
def test_timeout_is_a_total_deadline(fake, fault):
    """A server sending a byte a second keeps every read under the timeout; the request
    is still cut at the deadline (2 s), not held until the server is done (15 s)."""
    ep = _endpoint(fake.url(fault), timeout=2, retries=1)
    t0 = time.monotonic()
    with pytest.raises(EndpointError) as err:
        ep.request("/models")
    seconds = time.monotonic() - t0
    assert str(err.value).endswith("failed after 2 attempt(s): no complete reply within the timeout of 2 s")
    assert 4.0 <= seconds < 2 * 2 + 0.4 * 1.5 + 1.5, seconds  # two attempts of 2 s, one backoff


def test_a_fast_reply_is_not_cut(fake):
    ep = _endpoint(fake.url(), timeout=0.5)
    t0 = time.monotonic()
    for _ in range(20):
        assert ep.request("/models")["data"][0]["id"] == "smollm2"
    assert time.monotonic() - t0 < 5


MALFORMED = [  # fault, call, the one line's end
    ("html", "generate", r"failed after 1 attempt\(s\): not JSON: b'<html><body>502 Bad Gateway"),
    ("not-utf8", "generate", r"failed after 1 attempt\(s\): not JSON: b'\{\"choices\""),
    ("deep", "generate", r"failed after 1 attempt\(s\): the reply is nested too deep to be an API answer"),
    ("huge", "generate", r"failed after 1 attempt\(s\): a reply of 1,024 MiB is over the limit of 64 MiB"),
    ("array", "generate", r"answered without choices\.0\.text \(not an OpenAI-compatible reply: \[\{"),
    ("no-choices", "generate", r"answered without choices\.0\.text"),
    ("empty-choices", "generate", r"answered without choices\.0\.text"),
    ("text-number", "generate", r"answered choices\.0\.text = 42, not text"),
    ("usage-negative", "generate", r"reported usage\.prompt_tokens = -7, not a count of tokens"),
    ("usage-fraction", "generate", r"reported usage\.completion_tokens = 2\.5, not a count of tokens"),
    ("usage-text", "generate", r"answered usage as \"lots\", not an object"),
    ("nan-logprob", "loglikelihood", r"failed after 1 attempt\(s\): the reply holds NaN, which is not a number"),
    ("overflow-logprob", "loglikelihood", r"answered a log-probability of -Infinity, not a finite number"),
    ("text-logprob", "loglikelihood", r"answered a log-probability of \"very likely\", not a finite number"),
    ("no-logprobs", "loglikelihood", r"did not echo the prompt with logprobs .* or model\.mc_protocol: letter"),
    ("short-logprobs", "loglikelihood", r"logprobs\.token_logprobs that are not a list as long as logprobs\.tokens"),
    ("number-tokens", "loglikelihood", r"answered logprobs\.tokens that are not a list of text: \[1, 1"),
    ("usage-negative", "loglikelihood", r"reported usage\.prompt_tokens = -7, not a count of tokens"),
]


@pytest.mark.parametrize("fault, call, match", MALFORMED, ids=[f"{f}-{c}" for f, c, _ in MALFORMED])
def test_a_malformed_reply_is_one_line(fake, fault, call, match):
    """Every reply that is not the API's shape is an EndpointError line (exit 2 from the
    command line), never a traceback, and never a number that is scored or counted."""
    lm = connect(base_url=fake.url(fault), served_model="smollm2", tokenizer=None, name="smollm2", retries=0)
    with pytest.raises(EndpointError, match=match) as err:
        if call == "generate":
            lm.endpoint.generate(["Q?"], max_new_tokens=4)
        else:
            lm.endpoint.loglikelihood([("Who? ", "Mira")])
    assert str(err.value).startswith(f"model.base_url: {fake.url(fault)}") and "\n" not in str(err.value)
    assert len(str(err.value)) < 600
    assert lm.endpoint.take_usage() == {"prompt_tokens": 0, "completion_tokens": 0}  # nothing counted


def test_models_list_of_non_objects_is_one_line(fake):
    with pytest.raises(EndpointError, match=r"/models is not an OpenAI model list: \{'object': 'list', 'data': \[1, 2"):
        connect(base_url=fake.url("models-not-objects"), served_model="smollm2", tokenizer=None, name="m", retries=0)


def test_a_long_body_without_a_length_is_cut_at_the_limit(monkeypatch):
    """A body with no Content-Length (read until the server closes) is read up to the
    limit and refused, not read into memory whole."""
    import harness.models.endpoint as endpoint

    class Endless(_Garbage):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(1000):
                    self.wfile.write(b" " * 65536)

    monkeypatch.setattr(endpoint, "MAX_REPLY_BYTES", 1 << 20)
    server = http.server.HTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EndpointError, match=r"failed after 1 attempt\(s\): a reply over the limit of 1 MiB"):
            _endpoint(f"http://127.0.0.1:{server.server_port}/v1").request("/models")
    finally:
        server.shutdown()


def test_https_answers_and_keeps_the_deadline(tmp_path, monkeypatch):
    """The https path: a server on 127.0.0.1 with a self-signed certificate that the test
    trusts (SSL_CERT_FILE) answers; the same server trickling its reply over TLS is cut
    at the deadline; without the certificate trusted, the request fails in one line."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl (to make a test certificate) is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = FakeServer(tls=tls)
    try:
        with pytest.raises(EndpointError, match=r"failed after 1 attempt\(s\): URLError: .*CERTIFICATE_VERIFY_FAILED"):
            _endpoint(server.url()).request("/models")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert server.url().startswith("https://")
        assert _endpoint(server.url()).request("/models")["data"][0]["id"] == "smollm2"
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match="no complete reply within the timeout of 2 s"):
            _endpoint(server.url("trickle-body"), timeout=2).request("/models")
        assert time.monotonic() - t0 < 3.5
    finally:
        server.close()


def test_validate_checks_the_judges_key_too(tmp_path, capsys, monkeypatch, tiny_model_dir):
    """The judge reaches its endpoint through the same client (judge.load_judge ->
    connect), so its address is validated as the model's is, and `validate` checks its
    key before a run would train and answer first."""
    judge = {
        "name": "smollm2",
        "backend": "endpoint",
        "base_url": "http://127.0.0.1:9/v1",
        "served_model": "j",
        "api_key_env": "HARNESS_JUDGE_KEY",
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "output_dir": str(tmp_path / "results"),
                "embedder": {"name": "hashing"},
                "model": {"name": str(tiny_model_dir)},
                "eval": {"pipelines": ["base"], "judge": {"model": judge}},
            }
        )
    )
    monkeypatch.delenv("HARNESS_JUDGE_KEY", raising=False)
    assert main(["validate", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == (
        "harness: error: eval.judge.model.api_key_env: environment variable HARNESS_JUDGE_KEY is not set"
    )
    monkeypatch.setenv("HARNESS_JUDGE_KEY", "sk-judge\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(
            "harness: error: eval.judge.model.api_key_env: the key in $HARNESS_JUDGE_KEY has a line "
            "feed (LF) at character 9"
        )
        and "sk-judge" not in err
    )
    monkeypatch.setenv("HARNESS_JUDGE_KEY", "sk-judge")
    assert main(["validate", str(cfg)]) == 0
