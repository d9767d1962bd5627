"""Evergreen's sensors: cheap checks that launch runs; the heavy work happens in assets."""
