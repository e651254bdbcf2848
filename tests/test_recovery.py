"""The share of RAG's gain that fine-tuning recovers, with its paired interval; the
grid report's tuning budget per arm and training cost per cell."""

from harness.evaluate.stats import recovery_ratio
from harness.report.run import training_table_lines, tuning_budget_lines


def test_recovery_ratio_is_the_share_of_rag_s_gain_with_a_paired_interval():
    base = [0] * 40
    rag = [1] * 30 + [0] * 10  # +0.75
    finetuned = [1] * 15 + [0] * 25  # +0.375, on items RAG also gets
    r = recovery_ratio(base, finetuned, rag, samples=500, seed=0)
    assert r["ratio"] == 0.5 and r["rag_gain"] == 0.75 and r["finetuned_gain"] == 0.375 and r["n"] == 40
    lo, hi = r["ci95"]
    assert 0.25 < lo < 0.5 < hi < 0.75 and r["samples_used"] == 500
    below = recovery_ratio(base=[1] * 10 + [0] * 10, finetuned=[0] * 20, rag=[1] * 20, samples=200)
    assert below["ratio"] == -1.0 and below["ci95"][1] < 0  # fine-tuning fell below base
    assert recovery_ratio([1, 0], [1, 1], [1, 0])["ratio"] is None  # RAG gains nothing: undefined


def test_tuning_budget_counts_settings_per_arm():
    grid = {
        "cells": [
            {"id": f"c{i}", "values": {"train.lr": lr, "train.epochs": ep, "retrieval.top_k": 3}}
            for i, (lr, ep) in enumerate([(1e-3, 2), (1e-3, 4), (3e-3, 2), (3e-3, 4)])
        ]
    }
    (line, _) = tuning_budget_lines(grid)
    assert "fine-tuning arm tried 4 setting(s), the RAG arm 1 setting(s)" in line and "unequal" in line
    same = {
        "cells": [
            {"id": "a", "values": {"train.rank": 8, "retrieval.top_k": 1}},
            {"id": "b", "values": {"train.rank": 16, "retrieval.top_k": 5}},
        ]
    }
    assert "unequal" not in tuning_budget_lines(same)[0]


def test_training_table_gives_memory_over_weights_and_forgetting_per_cell():
    change = {
        "mmlu (all subjects)": {"finetuned": {"acc": {"diff": -0.03, "ci95": [-0.07, 0.01]}}},
        "hellaswag": {"finetuned": {"acc_norm": {"diff": -0.12, "ci95": [-0.22, -0.02]}}},
    }
    cells = {
        "full": {
            "costs": {
                "training": {
                    "method": "full",
                    "trainable_params": 100,
                    "peak_rss_mb": 900.0,
                    "start_rss_mb": 860.0,
                    "training_memory_mb": 48.0,
                    "weights_bytes": 8 * 2**20,
                    "wall_seconds": 12.3,
                }
            },
            "benchmarks": {"change_from_base": change},
        },
        "old": {
            "costs": {
                "training": {
                    "method": "lora",
                    "trainable_params": 10,
                    "peak_rss_mb": 64.0,
                    "weights_bytes": 8 * 2**20,
                    "wall_seconds": 5,
                }
            }
        },
        "gpu": {
            "costs": {
                "training": {
                    "method": "lora",
                    "trainable_params": 10,
                    "peak_rss_mb": 16.0,
                    "peak_gpu_mb": 24.0,
                    "weights_bytes": 8 * 2**20,
                    "wall_seconds": 5,
                }
            }
        },
    }
    lines = training_table_lines(["full", "old", "gpu"], cells)
    assert (
        "| full | full | 100 | 48 (weights + process rise while training) | 6.0x | 12 | -3 [-7, +1] | -12 [-22, -2] |"
        in lines
    )
    assert "| old | lora | 10 | 64 (process peak, not isolated) | 8.0x | 5 | - | - |" in lines
    assert "| gpu | lora | 10 | 24 (GPU peak) | 3.0x | 5 | - | - |" in lines
