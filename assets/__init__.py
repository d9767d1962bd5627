"""Evergreen's Dagster assets and asset checks, one module per layer; thin wrappers over ``pipeline``."""
