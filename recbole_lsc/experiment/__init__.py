"""Experiments: the stages of a run, its rows, request curves, costs and seeds."""
