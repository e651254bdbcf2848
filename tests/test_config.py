"""Experiment configs (harness/config.py): every file in experiments/ validates, unknown keys,
wrong types and bad names are errors that name the key, and a config's hash is stable."""

from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, config_hash, load_config, parse_config

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_experiment_file_validates(path):
    from harness.config import expand_grid

    cfg = load_config(path)
    assert cfg.name == path.stem
    assert expand_grid(cfg, source=str(path))  # grid cells validate too


def test_experiments_folder_is_not_empty():
    assert EXPERIMENTS


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"x\.yaml: train\.rnak: Extra inputs are not permitted"):
        parse_config({"name": "a", "train": {"rnak": 8}}, source="x.yaml")


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"retrieval\.top_k"):
        parse_config({"name": "a", "retrieval": {"top_k": "three"}})


def test_bad_pipeline_name_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"eval\.pipelines\.0: .*'base'"):
        parse_config({"name": "a", "eval": {"pipelines": ["bsae"]}})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="chunk_overlap must be smaller"):
        parse_config({"name": "a", "retrieval": {"chunk_size": 16, "chunk_overlap": 16}})
    with pytest.raises(ConfigError, match="together"):
        parse_config({"name": "a", "data": {"documents": "docs/"}})
    with pytest.raises(ConfigError, match="train_questions"):
        parse_config({"name": "a", "data": {"documents": "d", "questions": "q.jsonl"}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ invalid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)


def test_config_is_frozen_and_hash_is_stable(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"name": "c", "train": {"rank": 4}}))
    a, b = load_config(p), load_config(p)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(parse_config({"name": "c", "train": {"rank": 8}}))
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        a.train.rank = 2


def test_raft_with_full_fine_tuning_is_refused_at_validation():
    # `harness validate` must catch it before a run loads a model: RAFT trains a LoRA
    # adapter beside the default one, and full fine-tuning has no adapter to sit beside.
    with pytest.raises(ConfigError, match=r"'raft' .* train\.method: full"):
        parse_config({"name": "a", "train": {"method": "full"}, "eval": {"pipelines": ["base", "finetuned", "raft"]}})
    parse_config({"name": "a", "train": {"method": "lora"}, "eval": {"pipelines": ["base", "finetuned", "raft"]}})


def _file(tmp_path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_overrides_set_typed_values_in_order_and_start_missing_sections(tmp_path):
    path = _file(tmp_path, "name: x\ntrain: {rank: 8}\nbenchmarks: null\n")
    cfg = load_config(
        path,
        overrides=[
            "train.rank=4",
            "train.lr=0.002",
            "train.target_modules=[q_proj, k_proj]",
            "retrieval.top_k=5",  # no retrieval section in the file
            "benchmarks.hellaswag=false",  # a section the file sets to null
            "retrieval.top_k=2",  # a later one wins
            "name=y",
        ],
    )
    assert (cfg.train.rank, cfg.train.lr, cfg.train.target_modules) == (4, 0.002, ("q_proj", "k_proj"))
    assert (cfg.retrieval.top_k, cfg.benchmarks.hellaswag, cfg.name) == (2, False, "y")
    assert load_config(path, overrides=["benchmarks=null"]).benchmarks is None
    assert load_config(path).train.rank == 8  # the file itself is untouched


def test_override_under_a_yaml_alias_changes_only_its_own_place(tmp_path):
    path = _file(tmp_path, "name: x\nmodel: &m {name: smollm2}\neval:\n  judge: {model: *m}\n")
    cfg = load_config(path, overrides=["eval.judge.model.name=other"])
    assert (cfg.eval.judge.model.name, cfg.model.name) == ("other", "smollm2")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.rank=0", r"x\.yaml \(--set train\.rank=0\): train\.rank: Input should be greater than or equal to 1"),
        ("trian.rank=4", r"x\.yaml \(--set trian\.rank=4\): trian: Extra inputs are not permitted"),
        ("train.rnak=4", r"x\.yaml \(--set train\.rnak=4\): train\.rnak: Extra inputs are not permitted"),
        ("retrieval.chunk_overlap=64", r"\(--set retrieval\.chunk_overlap=64\): retrieval: .*smaller than"),
        ("train.rank", r"--set train\.rank: expected KEY=VALUE"),
        ("=4", r"--set =4: expected KEY=VALUE"),
        ("train.rank=[4", r"--set train\.rank=\[4: the value is not valid YAML"),
        ("train.rank.x=4", r"--set train\.rank\.x=4: train\.rank is a value, not a section"),
    ],
)
def test_a_bad_override_is_one_error_naming_it_and_its_key(tmp_path, override, message):
    path = _file(tmp_path, "name: x\ntrain: {rank: 8}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, overrides=["retrieval.top_k=2", override])
    assert "\n" not in str(info.value)


def test_an_error_in_the_file_itself_names_the_file_not_an_override(tmp_path):
    path = _file(tmp_path, "name: x\ntrain: {rank: 0}\n")
    with pytest.raises(ConfigError, match=r"^[^(]*x\.yaml: train\.rank: Input should be greater") as info:
        load_config(path, overrides=["retrieval.top_k=2"])
    assert "--set" not in str(info.value)
    assert load_config(path, overrides=["train.rank=4"]).train.rank == 4  # an override can mend the file
