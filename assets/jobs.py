"""Jobs: ingesting one day's data, and the main job that runs the whole graph for a day."""

import dagster as dg

from assets.data import clean_telemetry, features, gold_labels, raw_telemetry

INGEST_SELECTION = dg.AssetSelection.assets(raw_telemetry, clean_telemetry, features, gold_labels)
"""``clean_telemetry`` is a multi-asset: selecting it selects ``quarantine`` too."""

ingest_job = dg.define_asset_job(
    "ingest_job", selection=INGEST_SELECTION,
    description="One day's data layer: raw telemetry, checks, cleaning and quarantine, features, gold labels.",
)

main_job = dg.define_asset_job(
    "main_job", selection=dg.AssetSelection.all(),
    description="The whole graph for one day: data, teacher, student, evaluation, ONNX, registry, edge package.",
)
