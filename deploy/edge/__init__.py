"""The edge runtime (``evergreen_edge.py``, copied verbatim into every package) and its latency benchmark."""
