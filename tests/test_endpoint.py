"""The endpoint backend without a model server: config rules, and the one-line errors
for a server that is down, answers garbage, or needs a key that is not set. The tests
against a real server are in test_endpoint_server.py."""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import sys
import threading
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import ConfigError, parse_config
from harness.endpoint import Endpoint, EndpointError, connect, letter_question, parse_letter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_model(url: str, **extra) -> dict:
    return {"name": "smollm2", "backend": "endpoint", "base_url": url, "served_model": "smollm2", **extra}


def test_endpoint_config_rules():
    ok = parse_config({"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1"),
                       "eval": {"pipelines": ["base", "rag"]}})
    assert ok.model.backend == "endpoint" and ok.model.retries == 3
    with pytest.raises(ConfigError, match="model: Value error, model.backend 'endpoint' needs"):
        parse_config({"name": "x", "model": {"backend": "endpoint"}})
    with pytest.raises(ConfigError, match="served_adapter"):  # fine-tuned arms need the served adapter's name
        parse_config({"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1")})
    with pytest.raises(ConfigError, match="mc_protocol: letter"):
        parse_config({"name": "x", "model": endpoint_model("http://127.0.0.1:1/v1", api="chat"),
                      "eval": {"pipelines": ["base"]}})
    with pytest.raises(ConfigError, match="need model.backend: endpoint"):
        parse_config({"name": "x", "model": {"base_url": "http://127.0.0.1:1/v1"}})


def test_server_down_is_one_line_and_exit_2(tmp_path, capsys, tiny_model_dir):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "output_dir": str(tmp_path / "results"), "embedder": {"name": "hashing"},
                                   "model": {**endpoint_model(url, retries=1, timeout=2), "name": str(tiny_model_dir)},
                                   "eval": {"pipelines": ["base"]}}))
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
            connect(base_url=f"http://127.0.0.1:{server.server_port}/v1", served_model="m", tokenizer=None, name="m",
                    retries=1)
    finally:
        server.shutdown()


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("HARNESS_TEST_KEY", raising=False)
    ep = Endpoint(base_url="http://127.0.0.1:1/v1", served_model="m", api="completions",
                  api_key_env="HARNESS_TEST_KEY", timeout=1, retries=0, concurrency=1)
    with pytest.raises(EndpointError, match="HARNESS_TEST_KEY is not set"):
        ep.request("/models")


def test_identity_ignores_start_time_and_url():
    a = Endpoint(base_url="http://127.0.0.1:1/v1", served_model="m", api="completions", api_key_env=None,
                 timeout=1, retries=0, concurrency=1, model_entry={"id": "m", "root": "/models/x", "created": 1})
    b = Endpoint(base_url="http://127.0.0.1:2/v1", served_model="m", api="completions", api_key_env=None,
                 timeout=1, retries=0, concurrency=1, model_entry={"id": "m", "root": "/models/x", "created": 2})
    c = Endpoint(base_url="http://127.0.0.1:1/v1", served_model="m", api="completions", api_key_env=None,
                 timeout=1, retries=0, concurrency=1, model_entry={"id": "m", "root": "/models/y", "created": 1})
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
    from harness.endpoint import check_adapter

    key = "0123456789abcdef" * 4
    # what vLLM lists for --lora-modules NAME=PATH: the adapter's id, its path as root, the base as parent
    listing = {"object": "list", "data": [
        {"id": "base", "object": "model", "root": "/models/base", "created": 1},
        {"id": "ours", "object": "model", "root": f"/cache/adapters/{key[:32]}", "parent": "base"},
        {"id": "other", "object": "model", "root": f"/cache/adapters/{'f' * 32}", "parent": "base"},
        {"id": "elsewhere", "object": "model", "root": "/srv/lora/ft", "parent": "base"}]}
    server = _models_server(listing)
    try:
        ep = Endpoint(base_url=f"http://127.0.0.1:{server.server_port}/v1", served_model="base", api="completions",
                      api_key_env=None, timeout=5, retries=0, concurrency=1)
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

    from harness.endpoint import llama_cpp_serve_command

    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    bin_dir.mkdir()
    for name in ("harness", "python"):
        stub = bin_dir / name
        stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)
    adapter = str(tmp_path / "it's a \\cache" / ("0123456789abcdef" * 2))  # dash's echo would eat "\c"
    (tmp_path / "it's a \\cache").mkdir()
    line = llama_cpp_serve_command(base_gguf="/m/o'brien model.gguf", served_model="sm", served_adapter="sm-ft",
                                   adapter_dir=adapter)
    subprocess.run(["sh", "-c", line], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    export, server = [json.loads(x) for x in log.read_text().splitlines()]
    assert export == ["export-lora", adapter, "--base", "/m/o'brien model.gguf", "--out", f"{adapter}.gguf"]
    assert server == ["-m", "llama_cpp.server", "--config_file", f"{adapter}.server.json"]
    config = json.loads(Path(f"{adapter}.server.json").read_text())
    assert config["models"][1]["lora_path"] == f"{adapter}.gguf"


def test_llama_cpp_route_for_the_served_adapter(tmp_path):
    """The llama.cpp variant of the serve command: export, a two-alias server config on
    loopback, the server; and what check_adapter says of llama-cpp-python's model list."""
    from harness.endpoint import base_gguf, check_adapter, llama_cpp_server_config, serve_command
    from harness.models import embedded_gguf

    key = "0123456789abcdef" * 4
    adapter = f"/cache/adapters/{key[:32]}"
    assert base_gguf("smollm2") == str(embedded_gguf("smollm2"))
    assert base_gguf("/m/x.gguf") == "/m/x.gguf" and base_gguf("HuggingFaceTB/SmolLM2-135M") is None
    vllm_only = serve_command(base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter)
    assert "llama" not in vllm_only and f"--lora-modules sm-ft={adapter}" in vllm_only
    both = serve_command(base_model="/m/hf", served_model="sm", served_adapter="sm-ft", adapter_dir=adapter,
                         base_gguf="/m/x.gguf")
    assert both.startswith(vllm_only)
    llama = both.split("or with llama.cpp (CPU): ")[1]
    assert llama.startswith(f"harness export-lora {adapter} --base /m/x.gguf --out {adapter}.gguf && printf ")
    assert llama.endswith(f"python -m llama_cpp.server --config_file {adapter}.server.json")
    config = json.loads(shlex.split(llama.split(" && ")[1])[2])
    assert config == llama_cpp_server_config(base_gguf="/m/x.gguf", served_model="sm", served_adapter="sm-ft",
                                             lora_gguf=f"{adapter}.gguf")
    assert config["host"] == "127.0.0.1"
    assert [(m["model_alias"], m["model"], m.get("lora_path"), m["logits_all"]) for m in config["models"]] == \
        [("sm", "/m/x.gguf", None, True), ("sm-ft", "/m/x.gguf", f"{adapter}.gguf", True)]

    # what llama-cpp-python lists: aliases only, no path to check the cache key against
    listing = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "me", "permissions": []}
                                          for m in ("sm", "sm-ft")]}
    server = _models_server(listing)
    try:
        ep = Endpoint(base_url=f"http://127.0.0.1:{server.server_port}/v1", served_model="sm", api="completions",
                      api_key_env=None, timeout=5, retries=0, concurrency=1)
        assert check_adapter(ep, served_adapter="sm-ft", cache_key=key) == (
            "unverified: the server's /v1/models entry names no adapter path (llama-cpp-python lists only "
            f"aliases); its config's lora_path should be {key[:32]}.gguf")
    finally:
        server.shutdown()
