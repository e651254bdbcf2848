"""Question sets from the user's documents (`build`), the review sheet (`review`) and the
starter config (`starter`). Imports evaluate and below, never train or run.
"""
