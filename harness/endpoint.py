"""The `endpoint` backend: the model answers from an OpenAI-compatible HTTP server.

vLLM, llama.cpp's server, SGLang, TGI and Ollama all speak the OpenAI API. `connect(...)`
checks that the server lists the model under `/v1/models` and returns a `LoadedModel`
whose `endpoint` is an `Endpoint` client; `models.generate` and `models.loglikelihood`
hand such a model to the client, so pipelines, memo and runner work unchanged.

    lm = connect(base_url="http://127.0.0.1:8000/v1", served_model="smollm2", tokenizer=tok,
                 api_key_env="VLLM_API_KEY", concurrency=4, timeout=120, retries=3)

Protocols, recorded in results:
- generation: `completions` (the prompt rendered here, by the local tokenizer's chat
  template, exactly as in-process) or `chat` (the template's system and user messages,
  rendered by the server).
- multiple choice: `loglikelihood` through completions with `echo` and `logprobs` (the
  sum of the continuation's token log-probabilities, as in-process), where the server
  supports it; otherwise `letter`: the model is shown lettered choices and the letter it
  generates is its answer.

The API key is read from the environment variable named in the config, only when a
request is sent; it is never stored on the model nor written anywhere. The model's
identity (its `/v1/models` entry less volatile fields, plus any `system_fingerprint` the
server reports) keys the answer cache, not the URL: the same model behind another port
reuses its answers, and a different model behind the same URL does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shlex
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.models import Generation, LoadedModel, ModelError

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"


class EndpointError(ModelError):
    """The server is down, refuses, or answers something that is not the OpenAI API; the
    message names the URL, the request and what went wrong, in one line."""


class ChatMessages:
    """Stands in for a tokenizer under the `chat` API: `prompts.render` then yields the
    template's messages as JSON, which the client sends as a chat request."""

    chat_template = "messages"
    eos_token = ""

    def apply_chat_template(self, messages, *, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        return json.dumps(messages, ensure_ascii=False)


@dataclass
class Endpoint:
    base_url: str
    served_model: str
    api: str  # completions | chat
    api_key_env: str | None
    timeout: float
    retries: int
    concurrency: int
    mc_protocol: str = "loglikelihood"  # loglikelihood | letter
    adapters: dict = field(default_factory=dict)  # harness adapter name -> the server's model id for it
    model_entry: dict = field(default_factory=dict)
    active: str = ""  # the model id requests go to: the base, or a served adapter
    requests: int = 0  # requests sent (each retry counts), for tests and the report
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    logprobs_supported: bool | None = None  # learnt from the first scoring request
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.active = self.active or self.served_model

    # -- transport -------------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(f"model.api_key_env: environment variable {self.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request(self, path: str, payload: dict | None = None) -> dict:
        """One API call with retries and exponential backoff (with jitter) on connection
        errors, timeouts, 429 and 5xx; a 4xx other than 429 fails at once."""
        url = self.base_url.rstrip("/") + path
        data = json.dumps(payload).encode() if payload is not None else None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)) * (1 + random.random() / 2))
            with self._lock:
                self.requests += 1
            req = urllib.request.Request(url, data=data, headers=self._headers(),
                                         method="POST" if data is not None else "GET")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:200].decode(errors="replace").replace("\n", " ")
                last = f"HTTP {err.code}: {detail}"
                if err.code != 429 and err.code < 500:
                    break
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
                continue
            try:
                return json.loads(body)
            except json.JSONDecodeError:
                last = f"not JSON: {body[:120]!r}"
                continue
        raise EndpointError(f"model.base_url: {url} failed after {attempt + 1} attempt(s): {last}")

    def _count(self, reply: dict) -> None:
        usage = reply.get("usage") or {}
        with self._lock:
            for k in self.usage:
                self.usage[k] += int(usage.get(k) or 0)

    def take_usage(self) -> dict:
        """Tokens the server reported since the last call, and reset."""
        with self._lock:
            out = dict(self.usage)
            self.usage = {k: 0 for k in self.usage}
        return out

    def _map(self, fn, items: list) -> list:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    # -- generation ------------------------------------------------------------------
    def _complete(self, prompt: str, *, max_new_tokens: int, temperature: float | None, seed: int) -> Generation:
        t0 = time.perf_counter()
        sampling = {"temperature": temperature if temperature is not None else 0.0, "seed": seed}
        if self.api == "chat":
            reply = self.request("/chat/completions", {"model": self.active, "messages": json.loads(prompt),
                                                       "max_tokens": max_new_tokens, **sampling})
            text = _field(reply, self, "choices", 0, "message", "content")
        else:
            reply = self.request("/completions", {"model": self.active, "prompt": prompt,
                                                  "max_tokens": max_new_tokens, **sampling})
            text = _field(reply, self, "choices", 0, "text")
        self._count(reply)
        usage = reply.get("usage") or {}
        return Generation(text=(text or "").strip(), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          new_tokens=int(usage.get("completion_tokens") or 0), seconds=time.perf_counter() - t0)

    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float | None = None, seed: int = 0,
                 progress=None) -> list[Generation]:
        out = self._map(lambda ip: self._complete(ip[1], max_new_tokens=max_new_tokens, temperature=temperature,
                                                  seed=seed + ip[0]), list(enumerate(prompts)))
        if progress is not None:
            progress(len(prompts))
        return out

    # -- log-likelihood --------------------------------------------------------------
    def _score(self, pair: tuple[str, str]) -> float:
        """Summed log-probability of the continuation's tokens, echoed by the server.

        The echoed tokens are matched from the end: first the generated token (the API
        needs max_tokens >= 1), then the tokens that spell the continuation. Offsets are
        not used, since llama.cpp reports special tokens as empty text, which shifts them."""
        ctx, cont = pair
        # As in-process (lm-evaluation-harness): trailing spaces of the context belong to
        # the continuation.
        cont = ctx[len(ctx.rstrip(" ")):] + cont
        prompt = ctx + pair[1]
        reply = self.request("/completions", {"model": self.active, "prompt": prompt, "max_tokens": 1,
                                              "temperature": 0.0, "echo": True, "logprobs": 1})
        self._count(reply)
        text = _field(reply, self, "choices", 0, "text")
        lp = _field(reply, self, "choices", 0, "logprobs")
        if not isinstance(text, str) or not text.startswith(prompt) or not lp or not lp.get("tokens"):
            raise EndpointError(f"model.base_url: {self.base_url} did not echo the prompt with logprobs on "
                                f"/completions (model {self.active}); use a server that supports echo and logprobs "
                                "(vLLM, llama.cpp), or model.mc_protocol: letter")
        tokens, values = lp["tokens"], lp["token_logprobs"]
        i, gen = len(tokens), len(text) - len(prompt)
        while i > 0 and gen > 0:  # the generated token(s)
            i -= 1
            gen -= len(tokens[i])
        while i > 0 and tokens[i - 1] == "":  # a generated end-of-text token, shown as empty text
            i -= 1
        total, spelled = 0.0, ""
        while i > 0 and len(spelled) < len(cont):
            i -= 1
            if values[i] is None:
                break
            total += float(values[i])
            spelled = tokens[i] + spelled
        if not spelled.endswith(cont) or len(spelled) < len(cont):
            raise EndpointError(f"model.base_url: {self.base_url}: the echoed tokens do not spell the continuation "
                                f"{cont!r} (got {spelled!r})")
        return total

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[float]:
        return self._map(self._score, pairs)

    # -- identity and adapters -------------------------------------------------------
    def identity(self) -> str:
        """sha256 of the served model's stable identity: its /v1/models entry (without
        `created`, which servers set at start-up) and the model id requests go to."""
        entry = {k: v for k, v in self.model_entry.items() if k not in ("created", "permission", "permissions")}
        return hashlib.sha256(json.dumps({"entry": entry, "model": self.served_model},
                                         sort_keys=True).encode()).hexdigest()

    @contextlib.contextmanager
    def serving(self, model_id: str):
        """Send requests to `model_id` (a served adapter) inside the body."""
        before, self.active = self.active, model_id
        try:
            yield
        finally:
            self.active = before


def _field(reply: dict, ep: Endpoint, *path):
    node = reply
    try:
        for p in path:
            node = node[p]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"model.base_url: {ep.base_url} answered without {'.'.join(map(str, path))} "
                            f"(not an OpenAI-compatible reply: {json.dumps(reply)[:160]})") from None
    return node


def list_models(ep: Endpoint) -> list[dict]:
    reply = ep.request("/models")
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list):
        raise EndpointError(f"model.base_url: {ep.base_url}/models is not an OpenAI model list: {str(reply)[:160]}")
    return data


def local_tokenizer(name: str):
    """The tokenizer of the local model `name` (embedded name, .gguf, directory or hub
    id), which renders prompts for the completions API exactly as in-process."""
    from transformers import AutoTokenizer

    from harness.models import EMBEDDED_GENERATORS, converted_from_gguf, embedded_gguf

    if name in EMBEDDED_GENERATORS:
        source = converted_from_gguf(embedded_gguf(name))[0]
    elif name.endswith(".gguf"):
        source = converted_from_gguf(Path(name))[0]
    else:
        source = name
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelError(f"model.name: cannot load the tokenizer of {name!r} ({str(err).splitlines()[0]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def connect(*, base_url: str, served_model: str, tokenizer, name: str, api: str = "completions",
            mc_protocol: str = "loglikelihood", api_key_env: str | None = None, concurrency: int = 4,
            timeout: float = 120.0, retries: int = 3) -> LoadedModel:
    """A `LoadedModel` backed by the server at `base_url`; fails with EndpointError when
    the server is unreachable or does not list `served_model`."""
    ep = Endpoint(base_url=base_url, served_model=served_model, api=api, api_key_env=api_key_env, timeout=timeout,
                  retries=retries, concurrency=concurrency, mc_protocol=mc_protocol)
    entries = {m.get("id"): m for m in list_models(ep)}
    if served_model not in entries:
        raise EndpointError(f"model.served_model: {base_url} does not serve {served_model!r} "
                            f"(it lists: {', '.join(map(str, entries)) or 'nothing'})")
    ep.model_entry = entries[served_model]
    return LoadedModel(model=None, tokenizer=ChatMessages() if api == "chat" else tokenizer, name=name,
                       fingerprint=ep.identity(), dtype="served", device="endpoint", source=base_url, endpoint=ep)


def check_adapter(ep: Endpoint, *, served_adapter: str, cache_key: str) -> str:
    """Whether the server's adapter `served_adapter` is the one harness trained (cache key
    `cache_key`): vLLM lists a LoRA module with `root` = the path it was given, whose last
    folder is the cache key's first 32 characters when served from the harness cache.
    Returns "matches" or "unverified: <why>"; raises when the server names another."""
    entries = {m.get("id"): m for m in list_models(ep)}
    if served_adapter not in entries:
        raise EndpointError(f"model.served_adapter: {ep.base_url} does not serve {served_adapter!r} "
                            f"(it lists: {', '.join(map(str, entries))}); start it with the command in the log")
    root = str(entries[served_adapter].get("root") or "").rstrip("/")
    folder = root.rsplit("/", 1)[-1]
    if len(folder) == 32 and all(c in "0123456789abcdef" for c in folder):
        if folder != cache_key[:32]:
            raise EndpointError(f"model.served_adapter: {served_adapter!r} is served from {root}, whose cache key "
                                f"is not this run's adapter ({cache_key[:32]})")
        return "matches"
    if not root:  # llama-cpp-python lists aliases only: id, object, owned_by
        return ("unverified: the server's /v1/models entry names no adapter path (llama-cpp-python lists only "
                f"aliases); its config's lora_path should be {cache_key[:32]}.gguf")
    return f"unverified: the server reports root {root!r}, not a harness cache folder"


def serve_command(*, base_model: str, served_model: str, served_adapter: str, adapter_dir: str,
                  base_gguf: str | None = None) -> str:
    """The vLLM command that serves the base and the trained adapter under the names the
    config expects, bound to loopback (put a proxy in front to expose it); with the base
    model's GGUF (`base_gguf`), also the llama.cpp route, which runs on a CPU."""
    q = shlex.quote
    vllm = (f"vllm serve {q(base_model)} --served-model-name {q(served_model)} --host 127.0.0.1 --port 8000 "
            f"--enable-lora --max-lora-rank 64 --lora-modules {q(f'{served_adapter}={adapter_dir}')}")
    if base_gguf is None:
        return vllm
    return vllm + "\n  or with llama.cpp (CPU): " + llama_cpp_serve_command(
        base_gguf=base_gguf, served_model=served_model, served_adapter=served_adapter, adapter_dir=adapter_dir)


def lora_gguf_path(adapter_dir: str | Path) -> Path:
    """Where `harness export-lora` writes an adapter's GGUF by default: beside its folder,
    named after it (in the cache, after the adapter's cache key)."""
    return Path(str(adapter_dir).rstrip("/") + ".gguf")


def llama_cpp_server_config(*, base_gguf: str, served_model: str, served_adapter: str, lora_gguf: str,
                            port: int = 8080, n_ctx: int = 2048, n_threads: int | None = None) -> dict:
    """A `python -m llama_cpp.server --config_file` configuration that serves the base
    GGUF as `served_model` and the same GGUF with the LoRA as `served_adapter`, on
    loopback. `logits_all` lets completions echo log-probabilities (multiple choice).
    The server holds one model at a time and reloads on a switch of alias (about a
    second for a small model), which harness does once per pipeline."""
    common = {"model": str(base_gguf), "n_ctx": n_ctx, "logits_all": True, "verbose": False}
    if n_threads is not None:
        common["n_threads"] = n_threads
    return {"host": "127.0.0.1", "port": port,
            "models": [{**common, "model_alias": served_model},
                       {**common, "model_alias": served_adapter, "lora_path": str(lora_gguf)}]}


def llama_cpp_serve_command(*, base_gguf: str, served_model: str, served_adapter: str, adapter_dir: str,
                            port: int = 8080) -> str:
    """One shell line: export the adapter to GGUF, write the two-alias server config
    beside it, and start llama-cpp-python's server on loopback. Every path and the JSON
    are shell-quoted, so a path with a space or a quote survives."""
    lora = lora_gguf_path(adapter_dir)
    config_file = lora.with_suffix(".server.json")
    config = llama_cpp_server_config(base_gguf=base_gguf, served_model=served_model, served_adapter=served_adapter,
                                     lora_gguf=str(lora), port=port)
    q = shlex.quote
    return (f"harness export-lora {q(str(adapter_dir))} --base {q(str(base_gguf))} --out {q(str(lora))} && "
            f"printf '%s\\n' {q(json.dumps(config))} > {q(str(config_file))} && "
            f"python -m llama_cpp.server --config_file {q(str(config_file))}")


def base_gguf(name: str) -> str | None:
    """The GGUF file llama.cpp serves for the local model `name`: the embedded model's,
    or `name` itself when it is a .gguf path; None for a Hugging Face model."""
    from harness.models import EMBEDDED_GENERATORS, embedded_gguf

    if name in EMBEDDED_GENERATORS:
        return str(embedded_gguf(name))
    return name if name.endswith(".gguf") else None


def letter_question(question: str, choices) -> str:
    """The question with lettered choices, for the letter protocol."""
    lines = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n{lines}\nReply with the letter of the right choice only."


def parse_letter(text: str, n: int) -> int | None:
    """The index of the first choice letter the output names (A, "B.", "(C)"), or None."""
    for token in text.replace("(", " ").replace(")", " ").replace(".", " ").replace(":", " ").split():
        if len(token) == 1 and token.upper() in LETTERS[:n]:
            return LETTERS.index(token.upper())
    return None
