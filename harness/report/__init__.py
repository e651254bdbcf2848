"""Pure readers of results folders: the run report (`run`), tables, plots, the human
annotation page (`annotate`) and label analysis (`labels`). Imports store and evaluate;
never torch at import time.
"""
