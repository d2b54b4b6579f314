"""Evaluators: classification over a whole split (and, later, few-shot linear probes)."""
