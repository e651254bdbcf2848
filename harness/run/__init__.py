"""One run as named phases (`runner`), grids (`grid`), executors, preflight checks and the
run record (`record`). The top floor: imports every wing.
"""
