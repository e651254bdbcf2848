"""Each axis of variation has one registry, and the config's `Literal` for it names exactly
the registry's entries: adding a pipeline, a metric, a scenario, a retriever or an external
format is one entry in the registry plus the config word, and this test says when the two
drift apart (config.py imports nothing of harness, so it keeps its own copy of the names)."""

from __future__ import annotations

import typing

import pytest

from harness import config
from harness.answer import pipelines
from harness.data import items
from harness.evaluate import metrics, scenarios
from harness.train import methods


def literal_values(model, field: str) -> set[str]:
    """The values a config field's `Literal` admits (inside a tuple[...] too)."""
    annotation = model.model_fields[field].annotation
    while typing.get_origin(annotation) is not typing.Literal:
        annotation = typing.get_args(annotation)[0]
    return set(typing.get_args(annotation))


REGISTRIES = [
    ("eval.pipelines", config.EvalConfig, "pipelines", set(pipelines.PIPELINES)),
    ("scenario.name", config.ScenarioConfig, "name", set(scenarios.SCENARIOS)),
    ("eval.mc_metric", config.EvalConfig, "mc_metric", set(metrics.MC_METRICS)),
    ("eval.answer_metric", config.EvalConfig, "answer_metric", set(metrics.ANSWER_METRICS) | {"auto"}),
    ("data.external.format", config.ExternalDataConfig, "format", set(items.EXTERNAL_FORMATS)),
    ("train.method", config.TrainConfig, "method", set(methods.METHODS)),
]


@pytest.mark.parametrize("key, model, field, registry", REGISTRIES, ids=[r[0] for r in REGISTRIES])
def test_config_literal_names_exactly_its_registry(key, model, field, registry):
    assert literal_values(model, field) == registry, f"{key}: the config's Literal and the registry differ"


def test_answer_metrics_are_registered_metrics():
    """Every metric a verdict can be decided on has its typed record in METRICS."""
    assert set(metrics.ANSWER_METRICS.values()) | set(metrics.MC_METRICS.values()) <= set(metrics.METRICS)


def test_scenarios_with_own_items_is_the_registry_s_list():
    own = {name for name, s in scenarios.SCENARIOS.items() if s.build is not None}
    assert set(config.SCENARIOS_WITH_OWN_ITEMS) == own
    assert all(scenarios.builds_own_items(name) == (name in own) for name in scenarios.SCENARIOS)


def test_default_pipelines_are_registered():
    assert set(config.PIPELINE_NAMES) <= set(pipelines.PIPELINES)


def test_literal_values_reads_tuples_and_plain_fields():
    assert literal_values(config.EvalConfig, "pipelines") >= {"base", "raft"}
    assert literal_values(config.TrainConfig, "method") == {"lora", "qlora", "full"}
