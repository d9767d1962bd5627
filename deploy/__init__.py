"""Deployment helpers: instance configuration and the local launcher behind ``make run``."""
