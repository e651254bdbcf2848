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
request is sent; it is never stored on the model nor written anywhere, and a key that a
header cannot carry (a CR or LF copied from a file) is refused without being printed.
Requests go to `base_url` only (http or https): no redirect is followed, since urllib
would resend the key to wherever it points. Each request has a total deadline, and a
reply is checked before anything in it is used: at most MAX_REPLY_BYTES of JSON without
NaN, in the API's shape, with token counts that are counts and finite log-probabilities. The model's
identity (its `/v1/models` entry less volatile fields, plus any `system_fingerprint` the
server reports) keys the answer cache, not the URL: the same model behind another port
reuses its answers, and a different model behind the same URL does not.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import logging
import math
import os
import random
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import base_url_problem
from harness.models.local import Generation, LoadedModel, ModelError

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
# A reply larger than this is not an API answer: an echo of a 4,096-token prompt with
# logprobs is about 1 MiB.
MAX_REPLY_BYTES = 64 << 20


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
        problem = base_url_problem(self.base_url)
        if problem:
            raise EndpointError(f"model.base_url: {problem}")

    # -- transport -------------------------------------------------------------------
    def request(self, path: str, payload: dict | None = None):
        """One API call: the parsed JSON reply. Each attempt is cut at `timeout` seconds in
        all (connect, headers and body together); connection errors, timeouts, 429, 5xx
        and replies that are not JSON are retried with exponential backoff (with jitter,
        at most 8 s a wait); any other 4xx, a redirect, a reply over MAX_REPLY_BYTES or
        holding NaN fails at once. A failure is one EndpointError line without the key."""
        url = self.base_url.rstrip("/") + path
        data = json.dumps(payload).encode() if payload is not None else None
        key = api_key(self.api_key_env) if self.api_key_env else None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)) * (1 + random.random() / 2))
            with self._lock:
                self.requests += 1
            try:
                return _parse(_attempt(url, data, key=key, seconds=self.timeout))
            except _Retry as why:
                last = str(why)
            except _GiveUp as why:
                last = str(why)
                break
        raise EndpointError(_redact(f"model.base_url: {url} failed after {attempt + 1} attempt(s): {last}", key))

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.usage["prompt_tokens"] += prompt_tokens
            self.usage["completion_tokens"] += completion_tokens

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
            reply = self.request(
                "/chat/completions",
                {"model": self.active, "messages": json.loads(prompt), "max_tokens": max_new_tokens, **sampling},
            )
            text = _field(reply, self, "choices", 0, "message", "content", kind=(str, type(None)))
        else:
            reply = self.request(
                "/completions", {"model": self.active, "prompt": prompt, "max_tokens": max_new_tokens, **sampling}
            )
            text = _field(reply, self, "choices", 0, "text", kind=str)
        prompt_tokens, new_tokens = _usage(reply, self)
        self._count(prompt_tokens, new_tokens)
        return Generation(
            text=(text or "").strip(),
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            seconds=time.perf_counter() - t0,
        )

    def generate(
        self, prompts: list[str], *, max_new_tokens: int, temperature: float | None = None, seed: int = 0, progress=None
    ) -> list[Generation]:
        out = self._map(
            lambda ip: self._complete(ip[1], max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + ip[0]),
            list(enumerate(prompts)),
        )
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
        cont = ctx[len(ctx.rstrip(" ")) :] + cont
        prompt = ctx + pair[1]
        reply = self.request(
            "/completions",
            {"model": self.active, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1},
        )
        choice = _field(reply, self, "choices", 0)
        text, lp = (choice.get("text"), choice.get("logprobs")) if isinstance(choice, dict) else (None, None)
        if not isinstance(text, str) or not text.startswith(prompt) or not isinstance(lp, dict) or not lp.get("tokens"):
            raise EndpointError(
                f"model.base_url: {self.base_url} did not echo the prompt with logprobs on "
                f"/completions (model {self.active}); use a server that supports echo and logprobs "
                "(vLLM, llama.cpp), or model.mc_protocol: letter"
            )
        tokens, values = _echoed(lp, self)
        usage = _usage(reply, self)
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
            total += _logprob(values[i], self)
            spelled = tokens[i] + spelled
        if not spelled.endswith(cont) or len(spelled) < len(cont):
            raise EndpointError(
                f"model.base_url: {self.base_url}: the echoed tokens do not spell the continuation "
                f"{cont!r} (got {spelled!r})"
            )
        self._count(*usage)
        return total

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[float]:
        return self._map(self._score, pairs)

    # -- identity and adapters -------------------------------------------------------
    def identity(self) -> str:
        """sha256 of the served model's stable identity: its /v1/models entry (without
        `created`, which servers set at start-up) and the model id requests go to."""
        entry = {k: v for k, v in self.model_entry.items() if k not in ("created", "permission", "permissions")}
        return hashlib.sha256(
            json.dumps({"entry": entry, "model": self.served_model}, sort_keys=True).encode()
        ).hexdigest()

    @contextlib.contextmanager
    def serving(self, model_id: str):
        """Send requests to `model_id` (a served adapter) inside the body."""
        before, self.active = self.active, model_id
        try:
            yield
        finally:
            self.active = before


# -- transport: one attempt, its deadline, no redirects ------------------------------------
class _Retry(Exception):
    """An attempt failed in a way the next one may not (connection, timeout, 429, 5xx, not JSON)."""


class _GiveUp(Exception):
    """An attempt failed in a way every retry would (a redirect, a 4xx, an oversized reply)."""


def api_key(env: str, *, key: str = "model.api_key_env") -> str:
    """The API key in the environment variable `env`. A key is visible ASCII: one with a
    line end (copied from a file with CRLF) or another control character would break
    the request's headers, so it is refused in a line that names the variable, never
    the key."""
    value = os.environ.get(env)
    if not value:
        raise EndpointError(f"{key}: environment variable {env} is not set")
    for i, c in enumerate(value):
        if not " " < c <= "~":
            what = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", " ": "a space"}.get(
                c, "a control character" if c < " " or c == "\x7f" else "a non-ASCII character"
            )
            raise EndpointError(
                f"{key}: the key in ${env} has {what} at character {i + 1}; an API key is "
                "visible ASCII (a line end copied from a file?); it was not sent"
            )
    return value


def _redact(message: str, key: str | None) -> str:
    """A server may echo the request's headers in its error body: never repeat the key."""
    return message.replace(key, "<API key>") if key else message


def _printable(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return "".join(c if c.isprintable() else " " for c in text[:limit])


class _Deadline:
    """One attempt's total time. A socket timeout bounds each read, not their sum, so a
    server that sends a byte every few seconds would hold a request for ever; at the
    deadline a timer shuts the attempt's sockets down and the blocked read returns. It
    shuts down duplicates of the sockets (the same connection, its own descriptors), so
    it never touches a descriptor the connection has closed and the system has reused."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock.dup())
            if self.expired:
                self._shutdown()

    def _shutdown(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):  # already closed by the peer
                s.shutdown(socket.SHUT_RDWR)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks.clear()


class _Watched:
    """An HTTP(S) connection whose socket its deadline watches from the moment it connects
    (before a proxy tunnel or TLS handshake, which the deadline then covers too)."""

    def __init__(self, *args, deadline: _Deadline, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._connect_watched

    def _connect_watched(self, address, timeout, source_address=None):
        sock = socket.create_connection(address, min(timeout, self._deadline.left()), source_address)
        self._deadline.watch(sock)
        return sock


class _HTTP(_Watched, http.client.HTTPConnection):
    pass


class _HTTPS(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTP, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPS, deadline=self._deadline), req, context=self._context)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: urllib would resend the Authorization header to wherever the
    Location points, another host included. Returning None makes the 3xx an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """http and https only (no file:, ftp: or data: handler), proxies from the
    environment as urllib's default, no redirects, every connection under `deadline`."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTPHandler(deadline),
        _HTTPSHandler(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        _NoRedirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _read_capped(resp) -> bytes:
    length = resp.headers.get("Content-Length") or ""
    if length.isdigit() and int(length) > MAX_REPLY_BYTES:
        raise _GiveUp(f"a reply of {int(length) / 2**20:,.0f} MiB is over the limit of {MAX_REPLY_BYTES >> 20} MiB")
    body = resp.read(MAX_REPLY_BYTES + 1)
    if len(body) > MAX_REPLY_BYTES:
        raise _GiveUp(f"a reply over the limit of {MAX_REPLY_BYTES >> 20} MiB")
    return body


def _refused(err: urllib.error.HTTPError) -> Exception:
    """What a non-2xx status means for the next attempt."""
    if 300 <= err.code < 400:
        location = _printable(err.headers.get("Location") or "nowhere")
        return _GiveUp(
            f"HTTP {err.code} redirecting to {location}; harness follows no redirect, since the "
            "request carries the API key: set model.base_url to the server's own address"
        )
    detail = _printable(err.read(200) if err.fp is not None else b"")
    why = f"HTTP {err.code}: {detail}"
    return _Retry(why) if err.code == 429 or err.code >= 500 else _GiveUp(why)


def _attempt(url: str, data: bytes | None, *, key: str | None, seconds: float) -> bytes:
    """One HTTP request, cut at `seconds` in all; the reply's body."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    deadline = _Deadline(seconds)
    try:
        with _opener(deadline).open(req, timeout=seconds) as resp:
            body = _read_capped(resp)
    except urllib.error.HTTPError as err:
        raise (
            _Retry(f"no complete reply within the timeout of {seconds:g} s") if deadline.expired else _refused(err)
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if deadline.expired:
            raise _Retry(f"no complete reply within the timeout of {seconds:g} s") from None
        raise _Retry(f"{type(err).__name__}: {_printable(str(getattr(err, 'reason', err)))}") from None
    finally:
        deadline.close()
    if deadline.expired:  # the shutdown can end a body without a length as if complete
        raise _Retry(f"no complete reply within the timeout of {seconds:g} s")
    return body


def _no_constant(name: str):
    raise _GiveUp(f"the reply holds {name}, which is not a number in JSON")


def _parse(body: bytes):
    """The reply's JSON. NaN and Infinity, which Python's json would accept, are refused."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise _GiveUp("the reply is nested too deep to be an API answer") from None
    except ValueError:  # not JSON, or not UTF-8
        raise _Retry(f"not JSON: {body[:120]!r}") from None


def _field(reply, ep: Endpoint, *path, kind=None):
    """reply[path[0]][path[1]]..., which must be of `kind` when given; a reply without it
    (or not shaped as the OpenAI API's at all) is one line naming the path."""
    node = reply
    try:
        for p in path:
            node = node[p]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(
            f"model.base_url: {ep.base_url} answered without {'.'.join(map(str, path))} "
            f"(not an OpenAI-compatible reply: {json.dumps(reply)[:160]})"
        ) from None
    if kind is not None and not isinstance(node, kind):
        raise EndpointError(
            f"model.base_url: {ep.base_url} answered {'.'.join(map(str, path))} = {json.dumps(node)[:80]}, not text"
        )
    return node


def _usage(reply: dict, ep: Endpoint) -> tuple[int, int]:
    """The prompt and completion token counts the server reports (0 where it reports
    none). A count that is negative or not an integer is refused: it would be summed into
    the results' costs."""
    usage = reply.get("usage")
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        raise EndpointError(f"model.base_url: {ep.base_url} answered usage as {json.dumps(usage)[:80]}, not an object")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        n = usage.get(name)
        if n is not None and (type(n) is not int or n < 0):
            raise EndpointError(
                f"model.base_url: {ep.base_url} reported usage.{name} = {json.dumps(n)[:40]}, "
                "not a count of tokens (a non-negative integer)"
            )
        counts.append(n or 0)
    return counts[0], counts[1]


def _echoed(lp: dict, ep: Endpoint) -> tuple[list, list]:
    """The echoed tokens and their log-probabilities: two lists of one length, of text."""
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise EndpointError(
            f"model.base_url: {ep.base_url} answered logprobs.tokens that are not a list of text: "
            f"{json.dumps(tokens)[:80]}"
        )
    if not isinstance(values, list) or len(values) != len(tokens):
        raise EndpointError(
            f"model.base_url: {ep.base_url} answered logprobs.token_logprobs that are not a list as "
            f"long as logprobs.tokens ({len(tokens)}): {json.dumps(values)[:80]}"
        )
    return tokens, values


def _logprob(value, ep: Endpoint) -> float:
    """A log-probability the score sums: a finite number (a NaN would be scored as an
    answer; the JSON parser already refuses the NaN literal, this the 1e999 spelling)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EndpointError(
            f"model.base_url: {ep.base_url} answered a log-probability of {json.dumps(value)[:40]}, not a finite number"
        )
    return float(value)


def list_models(ep: Endpoint) -> list[dict]:
    reply = ep.request("/models")
    data = reply.get("data") if isinstance(reply, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise EndpointError(f"model.base_url: {ep.base_url}/models is not an OpenAI model list: {str(reply)[:160]}")
    return data


def local_tokenizer(name: str):
    """The tokenizer of the local model `name` (embedded name, .gguf, directory or hub
    id), which renders prompts for the completions API exactly as in-process."""
    from transformers import AutoTokenizer

    from harness.models.local import EMBEDDED_GENERATORS, converted_from_gguf, embedded_gguf

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


def connect(
    *,
    base_url: str,
    served_model: str,
    tokenizer,
    name: str,
    api: str = "completions",
    mc_protocol: str = "loglikelihood",
    api_key_env: str | None = None,
    concurrency: int = 4,
    timeout: float = 120.0,
    retries: int = 3,
) -> LoadedModel:
    """A `LoadedModel` backed by the server at `base_url`; fails with EndpointError when
    the server is unreachable or does not list `served_model`."""
    ep = Endpoint(
        base_url=base_url,
        served_model=served_model,
        api=api,
        api_key_env=api_key_env,
        timeout=timeout,
        retries=retries,
        concurrency=concurrency,
        mc_protocol=mc_protocol,
    )
    entries = {m.get("id"): m for m in list_models(ep)}
    if served_model not in entries:
        raise EndpointError(
            f"model.served_model: {base_url} does not serve {served_model!r} "
            f"(it lists: {', '.join(map(str, entries)) or 'nothing'})"
        )
    ep.model_entry = entries[served_model]
    return LoadedModel(
        model=None,
        tokenizer=ChatMessages() if api == "chat" else tokenizer,
        name=name,
        fingerprint=ep.identity(),
        dtype="served",
        device="endpoint",
        source=base_url,
        endpoint=ep,
    )


def serve_adapter(lm, *, served_adapter: str, cache_key: str) -> str:
    """Make the server's model id `served_adapter` the run's default adapter, and say
    whether it is the one harness trained (check_adapter)."""
    lm.endpoint.adapters["default"] = served_adapter
    return check_adapter(lm.endpoint, served_adapter=served_adapter, cache_key=cache_key)


def check_adapter(ep: Endpoint, *, served_adapter: str, cache_key: str) -> str:
    """Whether the server's adapter `served_adapter` is the one harness trained (cache key
    `cache_key`): vLLM lists a LoRA module with `root` = the path it was given, whose last
    folder is the cache key's first 32 characters when served from the harness cache.
    Returns "matches" or "unverified: <why>"; raises when the server names another."""
    entries = {m.get("id"): m for m in list_models(ep)}
    if served_adapter not in entries:
        raise EndpointError(
            f"model.served_adapter: {ep.base_url} does not serve {served_adapter!r} "
            f"(it lists: {', '.join(map(str, entries))}); start it with the command in the log"
        )
    root = str(entries[served_adapter].get("root") or "").rstrip("/")
    folder = root.rsplit("/", 1)[-1]
    if len(folder) == 32 and all(c in "0123456789abcdef" for c in folder):
        if folder != cache_key[:32]:
            raise EndpointError(
                f"model.served_adapter: {served_adapter!r} is served from {root}, whose cache key "
                f"is not this run's adapter ({cache_key[:32]})"
            )
        return "matches"
    if not root:  # llama-cpp-python lists aliases only: id, object, owned_by
        return (
            "unverified: the server's /v1/models entry names no adapter path (llama-cpp-python lists only "
            f"aliases); its config's lora_path should be {cache_key[:32]}.gguf"
        )
    return f"unverified: the server reports root {root!r}, not a harness cache folder"


# The values vLLM's --max-lora-rank accepts (vllm/config/lora.py, MaxLoRARanks).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of `rank` (train.rank);
    None above vLLM's largest."""
    return next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= rank), None)


def serve_command(
    *,
    base_model: str,
    served_model: str,
    served_adapter: str,
    adapter_dir: str,
    base_gguf: str | None = None,
    lora_rank: int = 64,
) -> str:
    """The vLLM command that serves the base and the trained adapter under the names the
    config expects, bound to loopback (put a proxy in front to expose it), with a
    --max-lora-rank that holds the adapter's `lora_rank` (train.rank); with the base
    model's GGUF (`base_gguf`), also the llama.cpp route, which runs on a CPU."""
    q = shlex.quote
    max_rank = vllm_max_lora_rank(lora_rank)
    vllm = (
        f"vllm serve {q(base_model)} --served-model-name {q(served_model)} --host 127.0.0.1 --port 8000 "
        f"--enable-lora --max-lora-rank {max_rank} --lora-modules {q(f'{served_adapter}={adapter_dir}')}"
        if max_rank is not None
        else f"(not vLLM: it serves LoRA ranks up to {VLLM_MAX_LORA_RANKS[-1]}, and train.rank is {lora_rank})"
    )
    if base_gguf is None:
        return vllm
    return (
        vllm
        + "\n  or with llama.cpp (CPU): "
        + llama_cpp_serve_command(
            base_gguf=base_gguf, served_model=served_model, served_adapter=served_adapter, adapter_dir=adapter_dir
        )
    )


def lora_gguf_path(adapter_dir: str | Path) -> Path:
    """Where `harness export-lora` writes an adapter's GGUF by default: beside its folder,
    named after it (in the cache, after the adapter's cache key)."""
    return Path(str(adapter_dir).rstrip("/") + ".gguf")


def llama_cpp_server_config(
    *,
    base_gguf: str,
    served_model: str,
    served_adapter: str,
    lora_gguf: str,
    port: int = 8080,
    n_ctx: int = 2048,
    n_threads: int | None = None,
) -> dict:
    """A `python -m llama_cpp.server --config_file` configuration that serves the base
    GGUF as `served_model` and the same GGUF with the LoRA as `served_adapter`, on
    loopback. `logits_all` lets completions echo log-probabilities (multiple choice).
    The server holds one model at a time and reloads on a switch of alias (about a
    second for a small model), which harness does once per pipeline."""
    common = {"model": str(base_gguf), "n_ctx": n_ctx, "logits_all": True, "verbose": False}
    if n_threads is not None:
        common["n_threads"] = n_threads
    return {
        "host": "127.0.0.1",
        "port": port,
        "models": [
            {**common, "model_alias": served_model},
            {**common, "model_alias": served_adapter, "lora_path": str(lora_gguf)},
        ],
    }


def llama_cpp_serve_command(
    *, base_gguf: str, served_model: str, served_adapter: str, adapter_dir: str, port: int = 8080
) -> str:
    """One shell line: export the adapter to GGUF, write the two-alias server config
    beside it, and start llama-cpp-python's server on loopback. Every path and the JSON
    are shell-quoted, so a path with a space or a quote survives."""
    lora = lora_gguf_path(adapter_dir)
    config_file = lora.with_suffix(".server.json")
    config = llama_cpp_server_config(
        base_gguf=base_gguf, served_model=served_model, served_adapter=served_adapter, lora_gguf=str(lora), port=port
    )
    q = shlex.quote
    return (
        f"harness export-lora {q(str(adapter_dir))} --base {q(str(base_gguf))} --out {q(str(lora))} && "
        f"printf '%s\\n' {q(json.dumps(config))} > {q(str(config_file))} && "
        f"python -m llama_cpp.server --config_file {q(str(config_file))}"
    )


def base_gguf(name: str) -> str | None:
    """The GGUF file llama.cpp serves for the local model `name`: the embedded model's,
    or `name` itself when it is a .gguf path; None for a Hugging Face model."""
    from harness.models.local import EMBEDDED_GENERATORS, embedded_gguf

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
