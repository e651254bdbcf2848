"""Scoring: per-item metrics, paired statistics, the verdict rule (`verdicts`, the whole
rule in one module), power and planning, knowledge tagging, scenarios, the judge and
the lm-eval forgetting benchmarks. Imports answer and below.
"""
