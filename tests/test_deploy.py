"""What a deployment relies on: docker-compose.yaml is a valid Compose file that starts the stack the README
describes, and infra/genomics.yaml is a valid CloudFormation template whose resources fit the code (job
definitions the DAGs name, the event rule the triggers read, tables the hooks use, rights the code needs)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from platform_settings import PlatformSettings
from tests.conftest import AWS_CALLS, AWS_CONN, CONNECTION_ROLES, SWEEPER_CONN, load_template, template_resources

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_SERVICES = ["airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"]


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker compose` where the v2 plugin exists, else the v1 `docker-compose` Debian packages."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.fail("no Compose CLI: ./dev test installs Debian's docker-compose")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GENOMICS_", "AIRFLOW_"))}
    return subprocess.run([*command, "-f", str(ROOT / "docker-compose.yaml"), *args], cwd=ROOT,
                          env={**base, **(env or {})}, capture_output=True, text=True)


def _argv(command: str | list[str]) -> list[str]:
    """Compose v2 prints a command as a list, v1 as it was written."""
    return command if isinstance(command, list) else command.split()


@pytest.fixture(scope="module")
def stack() -> dict:
    result = compose("config", env={"AIRFLOW_JWT_SECRET": "test-secret", "GENOMICS_BACKEND": "aws"})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_refuses_to_start_without_a_jwt_secret():
    result = compose("config", "-q")
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in result.stderr


def test_compose_runs_postgres_and_every_airflow_component_from_our_image(stack):
    services = stack["services"]
    assert set(services) >= {"postgres", *AIRFLOW_SERVICES}
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"]["dockerfile"].endswith("docker/airflow/Dockerfile")
        assert services[name]["image"] == services["airflow-scheduler"]["image"]
    commands = {name: _argv(services[name]["command"]) for name in AIRFLOW_SERVICES[1:]}
    assert commands == {"airflow-apiserver": ["api-server"], "airflow-scheduler": ["scheduler"],
                        "airflow-dag-processor": ["dag-processor"], "airflow-triggerer": ["triggerer"]}


def test_compose_mounts_the_project_and_creates_pools_before_anything_starts(stack):
    services = stack["services"]
    for name in AIRFLOW_SERVICES:
        targets = {str(v["target"] if isinstance(v, dict) else v.split(":")[1]) for v in services[name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= targets
    init = " ".join(_argv(services["airflow-init"]["command"]))
    assert "airflow db migrate" in init and "airflow pools import /opt/airflow/pools.json" in init
    for name in AIRFLOW_SERVICES[1:]:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_passes_every_platform_setting_through_and_sizes_the_triggerer(stack):
    env = stack["services"]["airflow-triggerer"]["environment"]
    assert env["GENOMICS_BACKEND"] == "aws"  # the backend is chosen by the host's environment
    missing = [f.name for f in fields(PlatformSettings) if "GENOMICS_" + f.name.upper() not in env]
    assert missing == []
    assert int(env["AIRFLOW__TRIGGERER__CAPACITY"]) >= 1000


def test_airflow_image_is_the_official_image_of_the_version_we_pin():
    pinned = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    dockerfile = (ROOT / "docker" / "airflow" / "Dockerfile").read_text()
    assert re.search(rf"^FROM apache/airflow:{re.escape(pinned)}-python3\.\d+$", dockerfile, re.M)


# --- infra/genomics.yaml -------------------------------------------------------------------------------
def test_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(ROOT / "infra" / "genomics.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _of_type(kind: str) -> dict[str, dict]:
    return {name: r["Properties"] for name, r in template_resources().items() if r["Type"] == kind}


def test_template_defines_every_job_definition_the_dags_submit_to():
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(ROOT / "dags"))
    used = {task.job_definition for dag in dagbag.dags.values() for task in dag.tasks
            if isinstance(getattr(task, "job_definition", None), str)}
    used.add(dagbag.dags["regenie_gwas"].params["regenie_image"])  # the GWAS jobs' default, chosen per run
    defined = {p["JobDefinitionName"] for p in _of_type("AWS::Batch::JobDefinition").values()}
    assert used and used <= defined, f"the DAGs use {sorted(used - defined)} which the template lacks"
    gwas = next(p for p in _of_type("AWS::Batch::JobDefinition").values() if p["JobDefinitionName"] == "genomics-gwas")
    volume = next(v["Name"] for v in gwas["ContainerProperties"]["Volumes"] if v["Host"]["SourcePath"] == "/fsx")
    mounts = {m["SourceVolume"]: m["ContainerPath"] for m in gwas["ContainerProperties"]["MountPoints"]}
    assert mounts[volume] == PlatformSettings().fsx_mount_root


def test_template_queues_put_spot_first_with_an_on_demand_fallback():
    environments = _of_type("AWS::Batch::ComputeEnvironment")
    kinds = {name: p["ComputeResources"]["Type"] for name, p in environments.items()}
    spot_queue = _of_type("AWS::Batch::JobQueue")["SpotJobQueue"]
    order = [kinds[e["ComputeEnvironment"]["Ref"]]
             for e in sorted(spot_queue["ComputeEnvironmentOrder"], key=lambda e: e["Order"])]
    assert order == ["SPOT", "EC2"]
    families = load_template()["Parameters"]["InstanceStoreTypes"]["Default"].split(",")
    assert families and all(re.fullmatch(r"[a-z]+\d[a-z]*d", f) for f in families)  # 'd': local NVMe
    for p in environments.values():
        assert p["ComputeResources"]["InstanceTypes"] == {"Ref": "InstanceStoreTypes"}


def test_template_sample_registry_has_the_keys_the_registry_writes():
    table = _of_type("AWS::DynamoDB::Table")["SampleRegistryTable"]
    keys = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
    assert keys == {"HASH": "project", "RANGE": "sample_id"}


def test_template_event_queue_has_a_dead_letter_queue_and_outlives_an_outage():
    queue = _of_type("AWS::SQS::Queue")["EventQueue"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}
    assert queue["MessageRetentionPeriod"] >= 4 * 86400
    target = _of_type("AWS::Events::Rule")["BatchStateChangeRule"]["Targets"][0]
    assert target["Arn"] == {"Fn::GetAtt": ["EventQueue", "Arn"]} and "DeadLetterConfig" in target


def _statements(role: str) -> list[dict]:
    policies = _of_type("AWS::IAM::Role")[role]["Policies"]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"]]


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_template_roles_grant_no_wildcard_actions_and_delete_only_tagged_file_systems():
    for role in ("AirflowRole", "BatchJobRole", "SweeperRole", "BatchInstanceRole"):
        for statement in _statements(role):
            assert not any(a == "*" or a.endswith(":*") for a in _actions(statement)), (role, statement)
            if "fsx:DeleteFileSystem" in _actions(statement):
                assert statement["Condition"]["StringEquals"]["aws:ResourceTag/genomics:deployment"]
    sweeper = {a for s in _statements("SweeperRole") for a in _actions(s)}
    assert sweeper == {"fsx:DescribeFileSystems", "fsx:DeleteFileSystem"}


def test_the_image_pipeline_role_pushes_to_its_repositories_and_registers_only_genomics_job_definitions():
    statements = []
    for statement in _statements("ImageBuildRole"):  # the connection's statement is inside an Fn::If
        statements += [statement["Fn::If"][1]] if "Fn::If" in statement else [statement]
    by_action = {a: s for s in statements for a in _actions(s)}
    assert not any(a == "*" or a.endswith(":*") for a in by_action)
    repositories = {r["Fn::GetAtt"][0] for r in by_action["ecr:PutImage"]["Resource"]}
    assert repositories == {f"{n}Repository" for n in ("Rnaseq", "Germline", "Ingest", "Gwas")}
    assert by_action["batch:RegisterJobDefinition"]["Resource"]["Fn::Sub"].endswith(":job-definition/genomics-*")
    passrole = by_action["iam:PassRole"]
    assert passrole["Resource"] == {"Fn::GetAtt": ["BatchJobRole", "Arn"]}
    assert passrole["Condition"]["StringEquals"]["iam:PassedToService"] == "batch.amazonaws.com"
    project = template_resources()["ImageBuildProject"]
    assert project["Condition"] == "HasImagePipeline" and project["Properties"]["Source"]["BuildSpec"] == \
        "docker/buildspec.yml"
    for repository in ("Rnaseq", "Germline", "Ingest", "Gwas"):
        properties = template_resources()[f"{repository}Repository"]["Properties"]
        assert properties["ImageScanningConfiguration"]["ScanOnPush"] is True
        assert "imageCountMoreThan" in properties["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"]


# Operations authorised under another action's name (SQS batches under the single action, S3 by verb).
SQS_ACTIONS = {"DeleteMessageBatch": "DeleteMessage", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
               "SendMessageBatch": "SendMessage"}
S3_ACTIONS = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket", "HeadObject": "GetObject",
              "HeadBucket": "ListBucket", "DeleteObjects": "DeleteObject", "CopyObject": "PutObject",
              "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
              "CompleteMultipartUpload": "PutObject"}


def _iam_actions(calls: set[str]) -> set[str]:
    actions = set()
    for call in calls:
        service, operation = call.split(":")
        renamed = {"s3": S3_ACTIONS, "sqs": SQS_ACTIONS}.get(service, {})
        actions.add(f"{service}:{renamed.get(operation, operation)}")
    return actions


def test_the_role_of_each_connection_allows_every_aws_call_made_through_it_in_this_test_session():
    """Runs last (conftest orders it): AWS_CALLS holds what plugins/ called through the aws fixture, by the
    connection the code asked for; each call must be allowed to the role that connection stands for."""
    if not AWS_CALLS:
        pytest.fail("no AWS calls were recorded: run this with the aws-path tests (./dev test)")
    assert set(AWS_CALLS) <= set(CONNECTION_ROLES), f"calls through connections standing for no role: {set(AWS_CALLS)}"
    needed = {conn_id: _iam_actions(calls) for conn_id, calls in AWS_CALLS.items()}
    for conn_id, actions in needed.items():
        role = CONNECTION_ROLES[conn_id]
        allowed = {a for s in _statements(role) if s["Effect"] == "Allow" for a in _actions(s)}
        missing = sorted(a for a in actions if not any(fnmatch.fnmatchcase(a, pattern) for pattern in allowed))
        assert missing == [], f"the code called {missing} through {conn_id}, whose {role} lacks them"
    # the recording works, for both connections
    assert {"batch:SubmitJob", "sqs:ReceiveMessage", "dynamodb:UpdateItem"} <= needed.get(AWS_CONN, set())
    assert {"fsx:DescribeFileSystems", "fsx:DeleteFileSystem"} <= needed.get(SWEEPER_CONN, set()), \
        "run this with the sweeper's aws-path test (tests/test_fsx.py)"


def test_stack_outputs_become_settings_that_make_a_complete_aws_configuration(monkeypatch):
    """scripts/stack_env.py turns every Genomics* output into a GENOMICS_* setting Airflow accepts."""
    from scripts.stack_env import env_lines

    example = {"GenomicsEventQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/genomics-batch-events",
               "GenomicsJobQueues": '{"spot": "arn:aws:batch:eu-west-1:123456789012:job-queue/genomics-spot"}',
               "GenomicsQueueCapacityTypes": '{"genomics-spot": "SPOT", "genomics-ondemand": "ON_DEMAND"}',
               "GenomicsLakeUri": "s3://genomics-lake-123456789012-eu-west-1",
               "GenomicsFsxSecurityGroupIds": "sg-0123456789abcdef0"}
    outputs = [{"OutputKey": key, "OutputValue": example.get(key, "x-" + key.lower())}
               for key in load_template()["Outputs"] if key.startswith("Genomics")]
    outputs = [o if o["OutputKey"] != "GenomicsBackend" else {**o, "OutputValue": "aws"} for o in outputs]
    lines = env_lines({"Stacks": [{"Outputs": outputs}]})
    assert len(lines) == len(outputs)
    for line in lines:
        key, value = line.split("=", 1)
        monkeypatch.setenv(key, value)
    settings = PlatformSettings.resolve(use_airflow_variable=False)
    assert settings.backend == "aws" and settings.event_queue_url == example["GenomicsEventQueueUrl"]
    assert settings.queue_capacity_types["genomics-ondemand"] == "ON_DEMAND"
    assert settings.fsx_security_group_ids == ["sg-0123456789abcdef0"]


def test_stack_outputs_naming_no_setting_are_refused():
    from scripts.stack_env import env_lines

    with pytest.raises(SystemExit, match="names no setting"):
        env_lines({"Stacks": [{"Outputs": [{"OutputKey": "GenomicsQueueUrl", "OutputValue": "x"}]}]})
