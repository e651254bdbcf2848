"""Bytes on disk: atomic files and JSONL, the results folder (marker, staging, lock,
provenance), the content-keyed cache and its verification, the generation memo, and the
typed `metrics.json` schema. Imports only `harness.config`.
"""
