"""Evergreen's Dagster-free core: plain functions on polars frames and files.

Assets and sensors call into this package; nothing here imports dagster, so every step can be
unit-tested and reused outside the orchestrator.
"""
