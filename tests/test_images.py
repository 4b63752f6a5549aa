"""The job images are built and really run: every Dockerfile in docker/ is built here (daemonless, with buildah,
on a Debian base made with debootstrap when none can be pulled) and real steps run inside the images on the
demo's synthetic data, with the same tools and results as the host run the local backend does by default.

Needs Debian's buildah, podman and debootstrap (./dev test installs them, tests/packages.txt) and root (CI runs
as root). The images are built once per test session, tagged with the commit; layers are reused by later builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local_batch import containers

ROOT = Path(__file__).resolve().parent.parent
REGENIE_DIR = ROOT.parent / "shared" / "tools" / "regenie"
sys.path.insert(0, str(ROOT / "scripts"))
import images  # noqa: E402

pytestmark = pytest.mark.images


def _builder_problem() -> str | None:
    missing = [tool for tool in ("buildah", "podman", "debootstrap") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not installed"
    if os.getuid() != 0:
        return "building images with buildah and debootstrap here needs root"
    return None


@pytest.fixture(scope="module")
def built() -> str:
    """Every job image, built once with buildah: returns the tag."""
    problem = _builder_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: CI builds the job images", pytrace=False)
        pytest.skip(problem)
    if not (REGENIE_DIR / "regenie").is_file():
        pytest.fail(f"no regenie binary in {REGENIE_DIR}: the gwas image takes it from there here", pytrace=False)
    tag = f"test-{images.git_tag()}"
    images.build(list(images.IMAGES), "buildah", tag, str(REGENIE_DIR))
    return tag


@pytest.mark.parametrize("pipeline", ["rnaseq", "germline"])
def test_a_pipeline_image_runs_its_steps_with_the_host_tools_and_gives_the_host_results(built, pipeline, tmp_path):
    image = images.CHECKS[pipeline](images.Runner(f"localhost/genomics-{pipeline}:{built}", "buildah", tmp_path / "image"))
    host = images.CHECKS[pipeline](images.Runner("host", "buildah", tmp_path / "host"))

    assert image["tools"] == host["tools"]  # the image installs the package lists ./dev installs on the host
    assert images.comparison_problems(pipeline, host, image) == []
    assert images.science_problems(pipeline, image) == []
    if pipeline == "rnaseq":
        assert image["fastp"] == host["fastp"] and image["spearman"] >= 0.9
        assert "salmon.merged.gene_tpm.parquet" in image["matrices"]  # the merge's pyarrow runs in the image
    else:
        assert image["records"] == host["records"] and image["recall"] >= 0.9


def test_the_gwas_image_has_regenie_and_runs_the_plink2_association(built, tmp_path):
    image = f"localhost/genomics-gwas:{built}"
    result = images.run_gwas(images.Runner(image, "buildah", tmp_path / "image"))

    assert {trait: hit["variant_id"] for trait, hit in result["top"].items()} == result["truth"]
    assert result["tools"]["plink2"].startswith("v2")
    version = tmp_path / "regenie.version"
    images.Runner(image, "buildah", tmp_path)(["sh", "-c", f"regenie --version > {version} 2>&1"])
    assert "v4.1.2" in version.read_text()


def test_the_ingest_image_has_the_host_versions_of_its_tools(built, tmp_path):
    image = images.run_ingest(images.Runner(f"localhost/genomics-ingest:{built}", "buildah", tmp_path / "image"))
    host = images.run_ingest(images.Runner("host", "buildah", tmp_path / "host"))
    assert image["tools"] == host["tools"]


def test_an_image_carries_the_commit_it_was_built_from(built):
    out = subprocess.run(["buildah", "inspect", "--type", "image", f"localhost/genomics-rnaseq:{built}"],
                         capture_output=True, text=True, check=True).stdout
    env = json.loads(out)["OCIv1"]["config"]["Env"]
    assert f"GENOMICS_IMAGE=genomics-rnaseq:{built}" in env


def test_the_local_backend_runs_a_job_inside_its_image_when_asked(built, local, monkeypatch, tmp_path):
    from genomics_steps import synthetic
    from hooks import backend
    from local_batch.control_plane import wait_for_terminal
    from local_batch.runner import ensure_runner

    monkeypatch.setenv("GENOMICS_LOCAL_CONTAINERS", "buildah")
    monkeypatch.setenv("GENOMICS_LOCAL_IMAGE_TAG", built)
    lake = (tmp_path / "lake").as_uri()
    synthetic.write_reference(lake, "synthetic-v1")
    synthetic.write_sample(lake, "demo", "synthetic-v1", "S1", "rnaseq")
    ensure_runner(local.local_home)
    plane = backend.batch_api(local).plane
    env = {"GENOMICS_LAKE_URI": lake, "GENOMICS_PROJECT": "demo", "GENOMICS_PIPELINE": "rnaseq",
           "GENOMICS_SAMPLE": "S1"}
    job = plane.submit_job({"jobName": "fastp", "jobQueue": "genomics-spot", "jobDefinition": "genomics-rnaseq",
                            "containerOverrides": {
                                "command": ["python3", "-m", "genomics_steps.rnaseq", "fastp", "--pipeline-version",
                                            "img"],
                                "environment": [{"name": k, "value": v} for k, v in env.items()]}})
    detail = wait_for_terminal(plane, job["jobId"], timeout=300)

    assert detail["status"] == "SUCCEEDED", Path(detail["container"]["logStreamName"]).read_text()[-2000:]
    metrics = json.loads((tmp_path / "lake/results/rnaseq/img/project=demo/sample=S1/fastp/metrics.json").read_text())
    assert metrics["image"] == f"genomics-rnaseq:{built}"  # set by the image itself: the step ran inside it
    assert metrics["metrics"]["reads_after"] > 0


def test_a_job_whose_image_was_never_built_fails_like_one_batch_cannot_pull(local, monkeypatch, tmp_path):
    from hooks import backend
    from local_batch.control_plane import wait_for_terminal
    from local_batch.runner import ensure_runner

    if _builder_problem() and os.environ.get("CI") != "true":
        pytest.skip(_builder_problem())
    monkeypatch.setenv("GENOMICS_LOCAL_CONTAINERS", "buildah")
    monkeypatch.setenv("GENOMICS_LOCAL_IMAGE_TAG", "never-built")
    ensure_runner(local.local_home)
    plane = backend.batch_api(local).plane
    job = plane.submit_job({"jobName": "x", "jobQueue": "genomics-spot", "jobDefinition": "genomics-rnaseq",
                            "containerOverrides": {"command": ["true"]}})
    detail = wait_for_terminal(plane, job["jobId"], timeout=120)

    assert (detail["status"], detail["container"]["exitCode"]) == ("FAILED", 127)
    assert "CannotPullContainerError" in Path(detail["container"]["logStreamName"]).read_text()


def test_a_container_sees_the_job_environment_and_its_folders_at_the_host_paths(tmp_path):
    job_env = {"GENOMICS_LAKE_URI": "file:///data/lake%20one/", "GENOMICS_PROJECT": "demo",
               "GENOMICS_FSX": json.dumps({"mount": "/tmp/fsx/fs-1", "output": "/tmp/fsx/fs-1/output"})}
    spec = json.loads(containers.write_spec(tmp_path, image="localhost/genomics-rnaseq:local", job_env=job_env,
                                            workdir=tmp_path / "work").read_text())
    argv = containers.run_argv("c1", spec, ["python3", "-m", "genomics_steps.rnaseq", "fastp"])

    assert spec["mounts"] == [str(tmp_path), "/data/lake one", "/tmp/fsx/fs-1"]
    assert argv[argv.index("c1"):] == ["c1", "--", "python3", "-m", "genomics_steps.rnaseq", "fastp"]
    assert "--env" in argv and "GENOMICS_PROJECT=demo" in argv
    assert not any(a.startswith(("PATH=", "PYTHONPATH=")) for a in argv)  # the image's own, not the host's


@pytest.mark.parametrize("setting, expected", [("", "host"), ("host", "host"), ("buildah", "buildah")])
def test_the_container_setting_defaults_to_host_processes(setting, expected):
    assert containers.mode({"GENOMICS_LOCAL_CONTAINERS": setting}) == expected


def test_an_unknown_container_setting_is_refused_by_name():
    with pytest.raises(ValueError, match="GENOMICS_LOCAL_CONTAINERS 'docker'"):
        containers.mode({"GENOMICS_LOCAL_CONTAINERS": "docker"})


def test_a_job_definition_maps_to_its_local_image():
    assert containers.image_for("genomics-gwas:7", {"GENOMICS_LOCAL_IMAGE_TAG": "abc"}) == "localhost/genomics-gwas:abc"
    assert containers.image_for("arn:aws:batch:eu-west-1:1:job-definition/genomics-rnaseq:3", {}) == \
        "localhost/genomics-rnaseq:local"


def test_register_makes_a_new_revision_of_each_job_definition_with_the_new_image_and_nothing_else_changed():
    import boto3
    from moto import mock_aws

    with mock_aws():
        batch = boto3.client("batch", region_name="eu-west-1")
        properties = {"image": "old/genomics-germline:aaa", "jobRoleArn": "arn:aws:iam::123456789012:role/jobs",
                      "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
                      "environment": [{"name": "TMPDIR", "value": "/scratch"}]}
        batch.register_job_definition(jobDefinitionName="genomics-germline", type="container",
                                      containerProperties=properties, retryStrategy={"attempts": 3},
                                      timeout={"attemptDurationSeconds": 86400})
        registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/genomics"

        registered = images.register(["germline"], "0123456789ab", registry, "eu-west-1", client=batch)

        assert registered == {"genomics-germline": "genomics-germline:2"}
        new = batch.describe_job_definitions(jobDefinitionName="genomics-germline", status="ACTIVE")["jobDefinitions"]
        newest = max(new, key=lambda d: d["revision"])
        assert newest["containerProperties"]["image"] == f"{registry}-germline:0123456789ab"
        for key in ("jobRoleArn", "resourceRequirements", "environment"):
            assert newest["containerProperties"][key] == properties[key]
        assert newest["retryStrategy"]["attempts"] == 3 and newest["timeout"] == {"attemptDurationSeconds": 86400}


def test_register_refuses_a_deployment_without_the_job_definition():
    import boto3
    from moto import mock_aws

    with mock_aws():
        batch = boto3.client("batch", region_name="eu-west-1")
        with pytest.raises(SystemExit, match="no ACTIVE job definition genomics-gwas"):
            images.register(["gwas"], "0123456789ab", "r/genomics", "eu-west-1", client=batch)


def test_the_image_pipeline_runs_the_commands_this_script_has():
    """docker/buildspec.yml calls scripts/images.py: every subcommand and option it uses exists, and it pushes
    only after the check, in the same phase (a failed command stops the phase: nothing unchecked is pushed)."""
    import yaml

    spec = yaml.safe_load((ROOT / "docker" / "buildspec.yml").read_text())
    build = spec["phases"]["build"]["commands"]
    commands = [c.split("scripts/images.py ", 1)[1].split()[0] for c in build if "scripts/images.py" in c]
    assert commands == ["build", "check", "push", "register"]
    assert "post_build" not in spec["phases"]  # post_build runs even after a failed build
    for line in build:
        args = [a.strip('"') for a in line.split("scripts/images.py ", 1)[1].split()]
        options = [a for a in args if a.startswith("--")]
        parser_ok = subprocess.run([sys.executable, str(ROOT / "scripts" / "images.py"), args[0], "--help"],
                                   capture_output=True, text=True)
        assert parser_ok.returncode == 0
        for option in options:
            assert option in parser_ok.stdout, (option, line)
