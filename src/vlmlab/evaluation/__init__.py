"""Evaluation: batched greedy generation and per-item prediction records."""
