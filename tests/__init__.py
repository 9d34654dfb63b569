"""Driftline test suite (a package so `python -m tests.harness.kafka` works from the repo root)."""
