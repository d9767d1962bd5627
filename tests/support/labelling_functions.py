"""Labelling functions declared in Python, for the test that loads them by ``module:attribute``."""

from pipeline.weak_supervision import LabellingFunction

RULES = [
    LabellingFunction("no_uptime", "power", lambda frame: (frame["uptime_h"] < 6).fill_null(False)),
]
NOT_RULES = ["a string is not a labelling function"]
