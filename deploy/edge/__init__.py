"""The edge package's latency benchmark (the runtime itself is ``pipeline/evergreen_edge.py``)."""
