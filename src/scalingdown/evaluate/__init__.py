"""Evaluation: prompts, batched generation, scoring, metrics with confidence intervals, efficiency."""
