"""Benchmark sweeps: SRM backbones x datasets x seeds into a leaderboard with plots."""
