"""The training methods, one table: what each trains, how the base is loaded for it, and
what it is called. `train.method` in config.py names exactly these
(tests/test_registries.py); the trainer, the adapter cache and the runner read the table
instead of comparing method names.

    METHODS["qlora"].quantization  -> "nf4"   (the run loads its base in 4-bit)
    METHODS["full"].adapter        -> False   (every weight trains, on a second load)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    label: str  # as the logs and progress bars name it
    adapter: bool  # trains a LoRA adapter; else every weight, on a second load of the base
    quantization: str | None  # how the run loads its base ("nf4": 4-bit through bitsandbytes)


METHODS = {
    "lora": Method(label="LoRA", adapter=True, quantization=None),
    "qlora": Method(label="QLoRA", adapter=True, quantization="nf4"),
    "full": Method(label="full", adapter=False, quantization=None),
}
