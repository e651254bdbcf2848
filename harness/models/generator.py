"""The Generator seam: everything the rest of harness may ask of a model, whichever
backend answers (the local transformers model, or an OpenAI-compatible server).

    generate(lm, prompts, max_new_tokens=16, batch_size=8)   -> [Generation]
    loglikelihood(lm, [(context, continuation), ...])        -> [float]
    with adapter_switch(lm, on, name): ...                    # the LoRA adapter on or off
    mc_protocol(lm), take_usage(lm), served(lm), describe(lm) # how it scores choices, tokens a server billed

`lm` is a `LoadedModel`; a served one carries its `Endpoint` and no weights. Only the
modules of `harness/models/` look inside it to tell the backends apart
(tests/test_layout.py holds that), so a third backend (vLLM in process, a GPU server) is
one more file here and no branch anywhere else.
"""

from __future__ import annotations

import contextlib

from harness.models.local import LoadedModel, generate, loglikelihood

__all__ = ["generate", "loglikelihood", "adapter_switch", "mc_protocol", "take_usage", "served", "describe"]


def served(lm: LoadedModel) -> bool:
    """Whether the model answers from a server (no weights in this process to train)."""
    return lm.endpoint is not None


def mc_protocol(lm: LoadedModel) -> str:
    """How the model scores multiple choice: `loglikelihood` of each option (local, and
    servers that return prompt log-probabilities) or `letter` (the server names a letter)."""
    return lm.endpoint.mc_protocol if lm.endpoint is not None else "loglikelihood"


def take_usage(lm: LoadedModel) -> dict | None:
    """Tokens a server reported since the last call, and reset; None for a local model."""
    return lm.endpoint.take_usage() if lm.endpoint is not None else None


def describe(lm: LoadedModel) -> dict | None:
    """A served model's endpoint as the run's record gives it (address, served model,
    API, protocol, the server's identity, the adapter served, requests); None locally."""
    if lm.endpoint is None:
        return None
    ep = lm.endpoint
    return {
        "base_url": ep.base_url,
        "served_model": ep.served_model,
        "api": ep.api,
        "mc_protocol": ep.mc_protocol,
        "identity": ep.identity(),
        "served_adapter": ep.adapters.get("default"),
        "requests": ep.requests,
    }


@contextlib.contextmanager
def adapter_switch(lm: LoadedModel, on: bool, name: str = "default"):
    """Run the body with the LoRA adapter `name` on, or with every adapter off."""
    if lm.endpoint is not None:  # a served model: the adapter is another model id on the same server
        if on and name not in lm.endpoint.adapters:
            raise RuntimeError(f"a fine-tuned pipeline was asked for, but the endpoint serves no adapter {name!r}")
        with lm.endpoint.serving(lm.endpoint.adapters[name] if on else lm.endpoint.served_model):
            yield
        return
    has_adapter = hasattr(lm.model, "disable_adapter") and hasattr(lm.model, "peft_config")
    if on and not (has_adapter and name in lm.model.peft_config):
        raise RuntimeError(f"a fine-tuned pipeline was asked for, but no adapter {name!r} is attached to the model")
    if has_adapter and not on:
        with lm.model.disable_adapter():
            yield
    elif on and lm.model.active_adapter != name:
        before = lm.model.active_adapter
        lm.model.set_adapter(name)
        try:
            yield
        finally:
            lm.model.set_adapter(before)
    else:
        yield
