"""The models that answer: the local transformers backend (`local`), an OpenAI-compatible
server (`endpoint`), and the GGUF LoRA exporter for serving an adapter (`gguf_lora`).
Imports only the store below it.
"""
