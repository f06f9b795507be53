"""Evaluation: pure functions from samples to DataFrames, and the figures people look at.

``vectors`` holds per-sample / per-method metrics for vector data; ``plots`` the 2-D
sample-over-contour figures (matplotlib, imported only when used).
"""
