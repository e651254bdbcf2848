"""The arms: prompts, retrieval (dense, BM25, hybrid) and the one pipeline function with two
switches (adapter on/off, retrieval on/off). Imports models, data and store.
"""
