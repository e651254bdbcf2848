"""Items: the evaluation dataset (`items`), the user's own files (`ingest`), the built-in
invented world (`world`) and the style corpus (`style`). Imports only the store.
"""
