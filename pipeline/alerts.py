"""Alerts to a webhook (Slack-, Teams- or anything-compatible JSON POST), kept free of Dagster."""

import os

import requests

WEBHOOK_ENV = "EVERGREEN_ALERT_WEBHOOK"
"""A secret: webhook URLs usually carry their token, so they come from the environment only."""


def webhook_url() -> str | None:
    return os.environ.get(WEBHOOK_ENV) or None


def post_alert(url: str, payload: dict, timeout: float = 10.0) -> None:
    """POST ``payload`` as JSON (with a ``text`` line for chat tools); raises on a non-2xx answer."""
    response = requests.post(url, json=payload, timeout=timeout)
    response.raise_for_status()
