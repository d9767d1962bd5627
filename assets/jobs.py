"""Jobs: a day's data and feedback (what arrives daily), the retrain, and the whole graph for a day."""

import dagster as dg

from assets.data import clean_telemetry, features, gold_labels, raw_telemetry
from assets.deployment import GROUP as DEPLOYMENT_GROUP
from assets.federated import federated_student, site_stores, site_update
from assets.feedback import drift_report, retraining_policy
from assets.labelling import label_queue, pseudo_labels, weak_labels
from assets.model import GROUP as MODEL_GROUP
from assets.release import canary_report
from assets.report import loop_report
from assets.training import training_set

INGEST_SELECTION = dg.AssetSelection.assets(raw_telemetry, clean_telemetry, features, gold_labels, label_queue,
                                            weak_labels, drift_report, retraining_policy, canary_report,
                                            loop_report)
"""``clean_telemetry`` is a multi-asset: selecting it selects ``quarantine`` too."""

RETRAIN_SELECTION = (dg.AssetSelection.assets(pseudo_labels, training_set, site_stores)
                     | dg.AssetSelection.groups(MODEL_GROUP, DEPLOYMENT_GROUP))
ROUND_ASSETS = dg.AssetSelection.assets(site_update, federated_student)
"""A federated round spans runs (one per site, then the aggregation), so no daily job includes it."""
MAIN_SELECTION = dg.AssetSelection.all() - ROUND_ASSETS

ingest_job = dg.define_asset_job(
    "ingest_job", selection=INGEST_SELECTION,
    description="One day's data and feedback: raw telemetry, checks, cleaning and quarantine, features, gold "
                "labels (with the label inbox's answers), the day's label queue and weak labels, the drift report against the production model, the retraining policy's decision, the "
                "gray release's report and the day's loop report (data/reports/<day>.html).",
)

retrain_job = dg.define_asset_job(
    "retrain_job", selection=RETRAIN_SELECTION,
    description="Retrain as the day's policy decided: pseudo-labels, training set (and each site's store of it), teacher (incremental or full), student, "
                "evaluation, ONNX (fp32 and int8), candidate and its gates, release (gray or to all sites), signed edge "
                "package. Launched by the drift sensor and the label sensor.",
)

main_job = dg.define_asset_job(
    "main_job", selection=MAIN_SELECTION,
    description="The whole graph for one day: data, feedback, teacher, student, evaluation, ONNX, registry, edge package.",
)

federated_site_job = dg.define_asset_job(
    "federated_site_job", selection=dg.AssetSelection.assets(site_update),
    description="One site's round of federated training (partition: day and site); launched by the federated sensor.",
)

federated_round_job = dg.define_asset_job(
    "federated_round_job", selection=dg.AssetSelection.assets(federated_student),
    description="Aggregates one federated round of a day from the sites' updates; launched by the federated sensor.",
)
