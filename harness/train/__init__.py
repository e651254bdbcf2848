"""Fine-tuning: training material (`material`), the Trainer loop (`trainer`) and adapters
in the cache (`adapters`). Imports evaluate and below.
"""
