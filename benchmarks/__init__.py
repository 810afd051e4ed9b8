"""Scheduling benchmarks: this engine against a pure-asyncio reference, level-by-level gather and LangGraph.

Run ``python -m benchmarks.scheduling --quick`` (about a minute) or without ``--quick`` for the full suite.
"""
