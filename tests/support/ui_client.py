"""A minimal Dagster (1.13.27) GraphQL client that launches work exactly as the UI does, for tests.

GraphQL documents/variables are copied from the webserver's UI bundle
(dagster_webserver/webapp/build/_next/static/chunks/*.js(.map)):
  - assets/LaunchAssetExecutionButton.tsx   (LaunchAssetLoaderQuery, executionParamsForAssetJob)
  - assets/LaunchAssetChoosePartitionsDialog.tsx (onLaunchAsSingleRun / onLaunchAsBackfill)
  - launchpad/ConfigFetch.tsx               (ConfigPartitionForAssetJobQuery -> partition tags + config)
  - launchpad/uiExecutionTags.ts            (adds tag dagster/from_ui=true)
  - runs/RunUtils.tsx                       (LaunchPipelineExecution mutation)
  - instance/backfill/BackfillUtils.tsx     (LaunchPartitionBackfill mutation)
"""
import time

import requests

_ERR = "... on PythonError { message stack }"

LAUNCH_ASSET_LOADER_QUERY = """
query LaunchAssetLoaderQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys) {
    id opNames jobNames isExecutable isObservable
    partitionDefinition { name type }
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually jobNames } } }
    repository { id name location { id name } }
  }
  assetNodeAdditionalRequiredKeys(assetKeys: $assetKeys) { path }
}"""

CONFIG_PARTITION_FOR_ASSET_JOB_QUERY = """
query ConfigPartitionForAssetJobQuery($repositoryName: String!, $repositoryLocationName: String!,
    $jobName: String!, $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                           repositoryLocationName: $repositoryLocationName}) {
    __typename
    ... on Pipeline {
      id
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        name
        runConfigOrError { __typename ... on PartitionRunConfig { yaml } %s }
        tagsOrError { __typename ... on PartitionTags { results { key value } } %s }
      }
    }
    ... on PipelineNotFoundError { message }
    %s
  }
}""" % (_ERR, _ERR, _ERR)

LAUNCH_PIPELINE_EXECUTION_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
    %s
  }
}""" % _ERR

LAUNCH_PARTITION_BACKFILL_MUTATION = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ... on InvalidSubsetError { message }
    %s
  }
}""" % _ERR

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          %s
        }
      }
    }
    %s
  }
}""" % (_ERR, _ERR)

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { id status }
    ... on RunNotFoundError { message }
    %s
  }
}""" % _ERR

BACKFILL_STATUS_QUERY = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { id status numPartitions error { message } }
    ... on BackfillNotFoundError { message }
    %s
  }
}""" % _ERR

UI_EXECUTION_TAGS = [{"key": "dagster/from_ui", "value": "true"}]
ASSET_JOB_PREFIX = "__ASSET_JOB"
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def gql(url, query, variables=None, timeout=60):
    r = requests.post(url.rstrip("/") + "/graphql",
                      json={"query": query, "variables": variables or {}}, timeout=timeout)
    r.raise_for_status()
    body = r.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def _with_ui_tags(tags):  # tagsWithUIExecutionTags()
    keys = {t["key"] for t in UI_EXECUTION_TAGS}
    return [{"key": t["key"], "value": t["value"]} for t in tags if t["key"] not in keys] + UI_EXECUTION_TAGS


def get_locations(url):
    """{location_name: [repository_name, ...]} for every loaded code location."""
    ws = gql(url, WORKSPACE_QUERY)["workspaceOrError"]
    if ws["__typename"] != "Workspace":
        raise RuntimeError(ws)
    out = {}
    for e in ws["locationEntries"]:
        loc = e["locationOrLoadError"]
        if loc and loc["__typename"] == "RepositoryLocation":
            out[e["name"]] = [r["name"] for r in loc["repositories"]]
    return out


def find_location_name(url, asset_key=None):
    """Location holding asset_key (list[str]) or, without one, the only loaded location."""
    if asset_key:
        nodes = gql(url, LAUNCH_ASSET_LOADER_QUERY, {"assetKeys": [{"path": asset_key}]})["assetNodes"]
        if not nodes:
            raise RuntimeError(f"asset {asset_key} not found")
        return nodes[0]["repository"]["location"]["name"]
    locs = list(get_locations(url))
    if len(locs) != 1:
        raise RuntimeError(f"expected exactly one loaded location, got {locs}")
    return locs[0]


def _load_assets(url, location_name, asset_keys):
    """LaunchAssetLoaderQuery + the UI's repo/job resolution (stateForLaunchingAssets/getCommonJob)."""
    keys = [{"path": list(k)} for k in asset_keys]
    data = gql(url, LAUNCH_ASSET_LOADER_QUERY, {"assetKeys": keys})
    nodes = [n for n in data["assetNodes"] if n["repository"]["location"]["name"] == location_name]
    if len(nodes) != len(keys):
        raise RuntimeError(f"only found {[n['assetKey']['path'] for n in nodes]} in {location_name}")
    if data["assetNodeAdditionalRequiredKeys"]:
        raise RuntimeError(f"selection also requires {data['assetNodeAdditionalRequiredKeys']}")
    if any(n["isObservable"] or not n["isExecutable"] for n in nodes):
        raise RuntimeError("observable/external assets cannot be materialized")
    repo_names = {n["repository"]["name"] for n in nodes}
    if len(repo_names) != 1:
        raise RuntimeError(f"assets span repositories {repo_names}")
    common = [j for j in nodes[0]["jobNames"] if all(j in n["jobNames"] for n in nodes)]
    # UI takes jobsInCommon[0]; the hidden asset job (__ASSET_JOB) is what it lands on for plain assets.
    job = next((j for j in common if j.startswith(ASSET_JOB_PREFIX)), common[0] if common else None)
    if not job:
        raise RuntimeError("no job in common for the selected assets")
    return nodes, repo_names.pop(), job, keys


def _check_selection(nodes, job):  # getAssetCheckHandleInputs()
    return [{"name": c["name"], "assetKey": {"path": n["assetKey"]["path"]}}
            for n in nodes if n["assetChecksOrError"].get("checks") is not None
            for c in n["assetChecksOrError"]["checks"]
            if not c["jobNames"] or job in c["jobNames"]]


def launch_materialization(url, location_name, asset_keys, partition_key=None):
    """'Materialize' button (unpartitioned) or 'Launch 1 run' in the partition dialog -> run_id."""
    nodes, repo_name, job, keys = _load_assets(url, location_name, asset_keys)
    tags, run_config = [], "{}"
    if partition_key is not None:
        cfg = gql(url, CONFIG_PARTITION_FOR_ASSET_JOB_QUERY, {
            "repositoryName": repo_name, "repositoryLocationName": location_name,
            "jobName": job, "partitionName": partition_key, "assetKeys": keys,
        })["pipelineOrError"]
        part = cfg.get("partition") if cfg["__typename"] == "Pipeline" else None
        if not part:
            raise RuntimeError(f"cannot resolve partition {partition_key!r}: {cfg}")
        if part["tagsOrError"]["__typename"] != "PartitionTags":
            raise RuntimeError(part["tagsOrError"])
        if part["runConfigOrError"]["__typename"] != "PartitionRunConfig":
            raise RuntimeError(part["runConfigOrError"])
        tags = part["tagsOrError"]["results"]          # e.g. dagster/partition=<key>
        run_config = part["runConfigOrError"]["yaml"] or ""
    execution_params = {                                 # executionParamsForAssetJob()
        "mode": "default",
        "executionMetadata": {"tags": _with_ui_tags(tags)},  # paramsWithUIExecutionTags()
        "runConfigData": run_config,
        "selector": {
            "repositoryLocationName": location_name,
            "repositoryName": repo_name,
            "pipelineName": job,
            "assetSelection": keys,
            "assetCheckSelection": _check_selection(nodes, job),
        },
    }
    res = gql(url, LAUNCH_PIPELINE_EXECUTION_MUTATION,
              {"executionParams": execution_params})["launchPipelineExecution"]
    if res["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch failed: {res}")
    return res["run"]["id"]


def launch_backfill(url, asset_keys, partition_names, tags=()):
    """'Launch backfill' in the partition dialog for asset-job / pure asset targets -> backfill_id."""
    backfill_params = {
        "tags": _with_ui_tags(list(tags)),
        "assetSelection": [{"path": list(k)} for k in asset_keys],
        "partitionNames": list(partition_names),
        "fromFailure": False,
        # UI sends runConfigData only if the user saved launchpad config (undefined otherwise)
    }
    res = gql(url, LAUNCH_PARTITION_BACKFILL_MUTATION,
              {"backfillParams": backfill_params})["launchPartitionBackfill"]
    if res["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill launch failed: {res}")
    return res["backfillId"]


def _poll(fn, terminal, timeout, interval):
    deadline = time.monotonic() + timeout
    while True:
        status = fn()
        if status in terminal:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {status} after {timeout}s")
        time.sleep(interval)


def wait_run(url, run_id, timeout=300, interval=1.0):
    """Poll runOrError until SUCCESS / FAILURE / CANCELED; returns that status."""
    def status():
        r = gql(url, RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        if r["__typename"] != "Run":
            raise RuntimeError(r)
        return r["status"]
    return _poll(status, TERMINAL_RUN, timeout, interval)


def wait_backfill(url, backfill_id, timeout=600, interval=2.0):
    """Poll partitionBackfillOrError until a terminal BulkActionStatus; returns it."""
    def status():
        b = gql(url, BACKFILL_STATUS_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
        if b["__typename"] != "PartitionBackfill":
            raise RuntimeError(b)
        return b["status"]
    return _poll(status, TERMINAL_BACKFILL, timeout, interval)
