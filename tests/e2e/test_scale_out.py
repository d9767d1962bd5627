"""Scale-out is configuration: the files in deploy/ work as they are.

PostgreSQL for real: deploy/postgres/dagster.yaml loads as the instance, partitions materialize into
it and a sensor reads them back. Its server comes from ``EVERGREEN_PG_*`` (.ci/run starts one);
otherwise a throwaway cluster is started here when PostgreSQL's binaries are installed, else the
test skips, or fails under ``EVERGREEN_REQUIRE_POSTGRES=1``. Asset files on an object store: the
IO manager through fsspec's in-memory filesystem. Kubernetes, by loading: the run config validates
against main_job on k8s_job_executor, and the Helm values build a valid run pod with dagster-k8s's
own config schemas and Job construction (no cluster).
"""

import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from upath import UPath

import definitions
from assets.data import clean_telemetry, features, raw_telemetry
from assets.feedback import retraining_policy
from assets.io_manager import PolarsParquetIOManager
from assets.jobs import INGEST_SELECTION, main_job
from sensors.drift import drift_sensor
from tests.conftest import ROOT, write_small_dataset

DEPLOY = ROOT / "deploy"
PG_ENV = ("EVERGREEN_PG_HOST", "EVERGREEN_PG_PORT", "EVERGREEN_PG_USER", "EVERGREEN_PG_PASSWORD", "EVERGREEN_PG_DB")
REQUIRE_POSTGRES_ENV = "EVERGREEN_REQUIRE_POSTGRES"
DAYS = ["2026-10-18", "2026-10-19"]
CODE_DIRS = ("assets", "sensors", "pipeline", "deploy")


# --- PostgreSQL -----------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    """The newest installed server binaries (Debian's layout), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _throwaway_cluster(bin_dir: Path) -> Iterator[dict[str, str]]:
    """A cluster in a temporary folder on a free loopback port, as .ci/run starts one: run as the
    postgres user when we are root (the server refuses root), stopped and deleted on exit."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="evergreen-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres")
    data, port, password = root / "data", _free_port(), secrets.token_hex(16)
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "--auth-local=peer",
                        "--auth-host=scram-sha-256"], check=True, capture_output=True)
        subprocess.run([*pg_ctl, "-l", str(root / "server.log"), "-w", "-o",
                        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"], check=True, capture_output=True)
        sql = f"CREATE ROLE evergreen LOGIN PASSWORD '{password}';\nCREATE DATABASE evergreen OWNER evergreen;\n"
        subprocess.run([*as_postgres, str(bin_dir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", str(root), "-p", str(port),
                        "-d", "postgres"], input=sql, text=True, check=True, capture_output=True)
        yield dict(zip(PG_ENV, ("127.0.0.1", str(port), "evergreen", password, "evergreen")))
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_env() -> Iterator[dict[str, str]]:
    """Connection settings of a running PostgreSQL server (see the module docstring)."""
    if all(os.environ.get(name) for name in PG_ENV):
        yield {name: os.environ[name] for name in PG_ENV}
        return
    bin_dir = _postgres_bin()
    if bin_dir is None:
        message = f"no PostgreSQL: set {', '.join(PG_ENV)} or install the server (.ci/run does both)"
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    with _throwaway_cluster(bin_dir) as env:
        yield env


@pytest.fixture
def pg_instance(postgres_env, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """The instance exactly as a deployment loads it: $DAGSTER_HOME holding deploy/postgres/dagster.yaml,
    its connection from the environment."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "postgres" / "dagster.yaml", home / "dagster.yaml")
    for name, value in postgres_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """Where this test's events start: a server from the environment may hold earlier runs."""
    records = instance.fetch_materializations(key, limit=1).records
    return str(records[0].storage_id) if records else None


@pytest.mark.slow
def test_partitions_and_a_sensor_tick_on_postgres(pg_instance, postgres_env, tmp_path):
    import psycopg2
    from dagster_postgres.event_log import PostgresEventLogStorage
    from dagster_postgres.run_storage import PostgresRunStorage

    instance = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

    resources = definitions.build_resources(str(tmp_path / "data"), str(write_small_dataset(tmp_path)))
    before = _latest_storage_id(instance, retraining_policy.key)
    results = [dg.materialize(definitions.ASSETS, selection=INGEST_SELECTION, partition_key=day, resources=resources,
                              instance=instance) for day in DAYS]
    assert all(r.success for r in results)

    for day, result in zip(DAYS, results):
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == day
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=features.key, asset_partitions=[day]), limit=1).records
        assert record.run_id == result.run_id
    with psycopg2.connect(host=postgres_env["EVERGREEN_PG_HOST"], port=int(postgres_env["EVERGREEN_PG_PORT"]),
                          user=postgres_env["EVERGREEN_PG_USER"], password=postgres_env["EVERGREEN_PG_PASSWORD"],
                          dbname=postgres_env["EVERGREEN_PG_DB"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, partition FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "AND asset_key = %s AND run_id = ANY(%s)", (features.key.to_string(), [r.run_id for r in results]))
        assert sorted(partition for _, partition in cur.fetchall()) == DAYS  # in the server's own tables
    conn.close()

    # One tick of the drift sensor: it reads the newest retraining_policy decision from the event log.
    context = dg.build_sensor_context(instance=instance, cursor=before, definitions=definitions.defs,
                                      resources={"storage": resources["storage"], "dataset": resources["dataset"]})
    tick = drift_sensor(context)
    [newest] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=retraining_policy.key, asset_partitions=[DAYS[-1]]), limit=1).records
    assert newest.run_id == results[-1].run_id
    assert tick.cursor == str(newest.storage_id)  # it read the second day's decision, from Postgres
    decided = [r.partition_key for r in tick.run_requests or []]
    assert decided == [DAYS[-1]] or (tick.skip_reason and DAYS[-1] in tick.skip_reason.skip_message)


def _process(config_type, value: dict) -> dict:
    """Validate and default ``value`` with one of Dagster's config schemas; fail with its errors."""
    from dagster._config import process_config, resolve_to_config_type

    result = process_config(resolve_to_config_type(config_type), value)
    assert result.success, [e.message for e in result.errors]
    return result.value


def test_the_postgres_instance_config_takes_every_connection_value_from_the_environment(monkeypatch):
    from dagster_postgres import DagsterPostgresStorage

    raw = yaml.safe_load((DEPLOY / "postgres" / "dagster.yaml").read_text())
    db = dict(raw["storage"]["postgres"]["postgres_db"])
    assert db.pop("scheme") == "postgresql+psycopg2"  # the driver installed; SQLAlchemy 2.1's default is psycopg 3
    assert {field: spec["env"] for field, spec in db.items()} == {
        "hostname": "EVERGREEN_PG_HOST", "port": "EVERGREEN_PG_PORT", "username": "EVERGREEN_PG_USER",
        "password": "EVERGREEN_PG_PASSWORD", "db_name": "EVERGREEN_PG_DB"}
    for name in PG_ENV:
        monkeypatch.setenv(name, "5432" if name.endswith("PORT") else "x")
    assert _process(DagsterPostgresStorage.config_type(), raw["storage"]["postgres"])["postgres_db"]["port"] == 5432
    embedded = yaml.safe_load((DEPLOY / "instance" / "dagster.yaml").read_text())
    assert {k: raw[k] for k in embedded} == embedded  # same run coordinator and telemetry as the embedded instance


# --- Object storage for asset files ---------------------------------------------------------------


def test_asset_files_round_trip_through_an_object_store(tmp_path):
    """fsspec's in-memory filesystem stands in for S3: the same UPath code path as any remote store
    (whole-object writes, no local rename), and a downstream asset loads its input back from it."""
    base = UPath(f"memory://evergreen-{uuid.uuid4().hex}/assets")
    resources = {**definitions.build_resources(str(tmp_path / "data"), str(write_small_dataset(tmp_path))),
                 "io_manager": PolarsParquetIOManager(base_path=base)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_telemetry, clean_telemetry], partition_key=DAYS[0], resources=resources,
                                instance=instance)
    assert result.success
    stored = base / "raw_telemetry" / f"{DAYS[0]}.parquet"
    assert stored.exists() and (base / "clean_telemetry" / f"{DAYS[0]}.parquet").exists()
    with stored.open("rb") as fh:
        assert pl.read_parquet(fh).equals(result.output_for_node("raw_telemetry").collect())  # a LazyFrame: streamed
    assert not (tmp_path / "data" / "assets").exists()
    base.fs.rm(base.path, recursive=True)


def test_an_s3_url_resolves_to_s3fs():
    assert type(UPath("s3://evergreen-assets/evergreen/assets").fs).__module__.startswith("s3fs")


def test_the_asset_storage_is_configured_by_environment(tmp_path, monkeypatch):
    """Needs the definitions.py change: EVERGREEN_ASSET_STORAGE, else <data dir>/assets."""
    monkeypatch.delenv("EVERGREEN_ASSET_STORAGE", raising=False)
    assert definitions.build_resources(str(tmp_path))["io_manager"]._base_path == UPath(tmp_path) / "assets"
    monkeypatch.setenv("EVERGREEN_ASSET_STORAGE", "s3://evergreen-assets/evergreen/assets")
    assert str(definitions.build_resources(str(tmp_path))["io_manager"]._base_path) == "s3://evergreen-assets/evergreen/assets"


def test_the_executor_is_configured_by_environment(monkeypatch):
    """Needs the definitions.py change: EVERGREEN_EXECUTOR=k8s selects k8s_job_executor."""
    from dagster_k8s import k8s_job_executor

    monkeypatch.setenv("EVERGREEN_EXECUTOR", "k8s")
    assert definitions.build_executor() is k8s_job_executor
    monkeypatch.delenv("EVERGREEN_EXECUTOR")
    assert definitions.build_executor() is definitions.MULTIPROCESS_EXECUTOR


# --- Kubernetes, by loading -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


@pytest.fixture(scope="module")
def code_deployment(helm_values) -> dict:
    [deployment] = helm_values["dagster-user-deployments"]["deployments"]
    return deployment


def test_the_k8s_run_config_validates_against_main_job(tmp_path):
    from dagster_k8s import k8s_job_executor

    k8s_defs = dg.Definitions(assets=definitions.ASSETS, asset_checks=dg.load_asset_checks_from_modules(definitions.LAYERS),
                              jobs=[main_job], resources=definitions.build_resources(str(tmp_path)),
                              executor=k8s_job_executor)
    job = k8s_defs.resolve_job_def(main_job.name)
    run_config = yaml.safe_load((DEPLOY / "k8s" / "run_config.yaml").read_text())
    dg.validate_run_config(job, run_config)
    assert set(run_config["execution"]["config"]["per_step_k8s_config"]) <= {node.name for node in job.nodes}


def _chart_run_launcher_config(values: dict) -> dict:
    """The K8sRunLauncher config the chart's instance template (templates/helpers/instance/
    _run-launcher.tpl) renders from these values, plus the fields the chart fills in itself."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    renamed = {"loadInclusterConfig": "load_incluster_config", "kubeconfigFile": "kubeconfig_file",
               "jobNamespace": "job_namespace", "imagePullPolicy": "image_pull_policy", "envVars": "env_vars",
               "volumeMounts": "volume_mounts", "volumes": "volumes", "labels": "labels", "resources": "resources",
               "failPodOnRunFailure": "fail_pod_on_run_failure", "schedulerName": "scheduler_name",
               "securityContext": "security_context"}
    run_k8s = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
               "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
               "jobMetadata": "job_metadata"}
    unknown = set(k8s) - set(renamed) - {"envConfigMaps", "envSecrets", "runK8sConfig", "image"}
    assert not unknown, f"values the chart's template does not render: {unknown}"
    config = {renamed[key]: value for key, value in k8s.items() if key in renamed}
    config |= {"env_config_maps": [m["name"] for m in k8s.get("envConfigMaps", [])],
               "env_secrets": [s["name"] for s in k8s.get("envSecrets", [])],
               "run_k8s_config": {run_k8s[key]: value for key, value in k8s.get("runK8sConfig", {}).items()}}
    return config | {"job_namespace": k8s.get("jobNamespace") or "evergreen", "dagster_home": "/opt/dagster/dagster_home",
                     "instance_config_map": "evergreen-dagster-instance", "service_account_name": "evergreen-dagster",
                     "postgres_password_secret": values["global"]["postgresqlSecretName"]}


def _chart_container_context(deployment: dict) -> dict:
    """The container context the user-deployments chart gives the code location
    (dagsterUserDeployments.k8sContainerContext): what run and step pods inherit."""
    return {"k8s": {"image_pull_policy": deployment["image"]["pullPolicy"], "namespace": "evergreen",
                    "env_config_maps": [f"evergreen-dagster-{deployment['name']}-user-env",
                                        *(m["name"] for m in deployment.get("envConfigMaps", []))],
                    "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
                    "volume_mounts": deployment.get("volumeMounts", []), "volumes": deployment.get("volumes", []),
                    "env": deployment.get("env", []), "service_account_name": "evergreen-dagster-user-deployments",
                    "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}}}}


def test_the_helm_values_build_a_valid_run_pod(helm_values, code_deployment):
    """dagster-k8s's own schemas and Job construction, as the daemon's K8sRunLauncher runs them: a
    misspelt Kubernetes field or a launcher option the chart cannot render fails here."""
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    assert helm_values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = _process(K8sRunLauncher.config_type(), _chart_run_launcher_config(helm_values))
    from_launcher = K8sContainerContext(
        image_pull_policy=launcher["image_pull_policy"], namespace=launcher["job_namespace"],
        service_account_name=launcher["service_account_name"], resources=launcher.get("resources"),
        env_config_maps=launcher["env_config_maps"], env_secrets=launcher["env_secrets"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(launcher["run_k8s_config"]))
    context = from_launcher.merge(K8sContainerContext.create_from_config(_chart_container_context(code_deployment)))
    job_config = DagsterK8sJobConfig(job_image="registry.example.com/evergreen:test", dagster_home=launcher["dagster_home"],
                                     instance_config_map=launcher["instance_config_map"],
                                     postgres_password_secret=launcher["postgres_password_secret"])
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_run", "{}"], "dagster-run-test",
                                    user_defined_k8s_config=context.run_k8s_config, component="run_worker")

    pod = job.spec.template.spec
    [container] = pod.containers
    env = {e.name: e for e in container.env}
    assert env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == helm_values["global"]["postgresqlSecretName"]
    for name in ("EVERGREEN_HASH_KEY", "EVERGREEN_SIGNING_KEY", "EVERGREEN_ALERT_WEBHOOK"):
        assert env[name].value is None and env[name].value_from.secret_key_ref.name, name  # from a Secret, never a value
    assert env["EVERGREEN_ASSET_STORAGE"].value.startswith("s3://")
    [mount] = container.volume_mounts
    assert mount.mount_path == env["EVERGREEN_DATA_DIR"].value
    [volume] = pod.volumes
    assert volume.name == mount.name
    assert pod.security_context.fs_group == 10001 and pod.security_context.run_as_non_root

    # Each step pod of main_job: the run's context and deploy/k8s/run_config.yaml's resources.
    execution = yaml.safe_load((DEPLOY / "k8s" / "run_config.yaml").read_text())["execution"]["config"]
    for step_config in [execution["step_k8s_config"], *execution["per_step_k8s_config"].values()]:
        step = context.merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(step_config)))
        step_job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "dagster-step-test",
                                             user_defined_k8s_config=step.run_k8s_config, component="step_worker")
        [step_container] = step_job.spec.template.spec.containers
        assert step_container.resources.requests == step_config["container_config"]["resources"]["requests"]


def test_the_helm_values_keep_secrets_out_and_share_one_data_volume(helm_values, code_deployment):
    text = (DEPLOY / "helm" / "values.yaml").read_text()
    assert not re.search(r"(?i)^\s*[\w-]*password\s*:", text, re.M)  # no postgresqlPassword: the Secret has it
    assert helm_values["postgresql"]["enabled"] is False and helm_values["generatePostgresqlPasswordSecret"] is False
    [claim] = [m for m in helm_values["extraManifests"] if m["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # fcntl-locked files shared by pods on several nodes
    [volume] = code_deployment["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert code_deployment["includeConfigInLaunchedRuns"]["enabled"]  # run and step pods get env and volume too


def _env_names_the_code_reads() -> set[str]:
    sources = [ROOT / "definitions.py", *(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))]
    return {name for path in sources for name in re.findall(r"[\"'](EVERGREEN_[A-Z0-9_]+)[\"']", path.read_text())}


def test_every_variable_the_deployment_sets_is_one_the_code_reads(code_deployment):
    set_here = {e["name"] for e in code_deployment["env"]}
    missing = set_here - _env_names_the_code_reads()
    assert not missing, f"set by deploy/helm/values.yaml but read nowhere (apply the definitions.py change?): {missing}"


def test_the_code_server_serves_the_definitions_module(code_deployment):
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    [location] = workspace["load_from"]
    module = location["python_module"]["module_name"]
    assert code_deployment["codeServerArgs"] == ["-m", module]
    assert importlib.util.find_spec(module) is not None
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    cmd = yaml.safe_load(cmd)
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[cmd.index("-m") + 1] == module
    assert cmd[cmd.index("-p") + 1] == str(code_deployment["port"])


def test_the_image_pins_the_same_torch_as_the_project():
    pins = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if d.startswith("torch==")]
    [torch_version] = re.findall(r"^ARG TORCH_VERSION=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert pins == [f"torch=={torch_version}"]
