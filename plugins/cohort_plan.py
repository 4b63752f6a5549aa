"""Planning a germline run's joint-called cohort, after the per-sample steps: which samples, which regions,
and whether the cohort must be built at all.

The cohort of a project and pipeline version holds every sample whose germline steps are all complete (one
listing of the results prefix: this run's samples and every earlier run's), not just this run's. Its regions
come from the reference's ``genome.fa.fai`` (beside the bwa index): ``cohort_regions`` pieces of nearly equal
length in reference order (``genomics_steps.cohort.plan_regions``), one child of the region array job each. The
plan is written to the lake under its key (a hash of the samples, regions and reference); the cohort is built
when the key differs from the one its manifest records (a sample was added, the region count or the reference
changed), or when ``force``; otherwise every cohort task is skipped.

On AWS the region jobs read the BAMs from the run's FSx for Lustre file system, with the results prefix linked
to it; on the local backend they read the lake's files where they are, so no file system is made.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from genomics_steps import cohort, layout
from genomics_steps.germline import PIPELINE, STEPS
from genomics_steps.names import LABEL, problems_in

from pipeline_plan import RunConfigError

DEFAULT_REGIONS = 8
MAX_REGIONS = 10_000  # the children of one Batch array job
MAX_FAI_BYTES = 64 * 1024 * 1024


def cohort_params() -> dict[str, Any]:
    """The germline DAG's Params for its cohort, beside the Params both pipelines share."""
    from airflow.sdk import Param

    return {
        "cohort_regions": Param(DEFAULT_REGIONS, type="integer", minimum=1, maximum=MAX_REGIONS,
                                title="Cohort regions",
                                description="Joint calling runs as one Batch array job with a child per region: "
                                            "the reference cut into this many pieces of nearly equal length."),
        "cohort_fsx_capacity_gib": Param(1200, type="integer", minimum=1200, title="Cohort FSx capacity (GiB)",
                                         description="On AWS, the file system the region jobs read the BAMs from "
                                                     "(SCRATCH_2): 1200, 2400, then steps of 2400; at least the "
                                                     "size of the cohort's BAMs."),
    }


def check_regions(value: Any) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_REGIONS):
        raise RunConfigError(f"run config refused:\n - cohort_regions must be a whole number from 1 to "
                             f"{MAX_REGIONS}, got {value!r}")
    return value


def plan_cohort(params: dict[str, Any], *, lake_root: str, list_files: Callable[[str], list[str]],
                read_head: Callable[[str, int], bytes], write_text: Callable[[str, str], None],
                stopped: str = "") -> dict[str, Any]:
    """The cohort's plan, written to the lake when it is to be built. Returns what the cohort tasks need (every
    key, built or not: the tasks read them one by one). ``stopped``: why the run's policy stopped it (its
    results are not published, and the cohort is left as it is)."""
    project, version, reference = params.get("project"), params.get("pipeline_version"), params.get("reference")
    problems = problems_in([(LABEL, "project", project), (LABEL, "pipeline_version", version),
                            (LABEL, "reference", reference)])
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))
    count = check_regions(params.get("cohort_regions", DEFAULT_REGIONS))
    results = layout.results_prefix(lake_root, PIPELINE, version, project)
    listing = list_files(results)
    samples = sorted(layout.completed_samples(listing, STEPS))
    vcf = layout.cohort_vcf(lake_root, version, project)
    plan: dict[str, Any] = {"build": False, "results": results, "cohort_vcf": vcf,
                            "samples": len(samples), "regions": [], "plan_uri": "", "units": [version], "reason": "",
                            "key": ""}
    if stopped:
        plan["reason"] = f"the run stopped ({stopped}): the cohort is left as it is"
        return plan
    if not samples:
        plan["reason"] = "no sample of the project is complete for this version"
        return plan
    fai = layout.index_prefix(lake_root, reference, "bwa") + "genome.fa.fai"
    text = read_head(fai, MAX_FAI_BYTES)
    if len(text) >= MAX_FAI_BYTES:
        raise RunConfigError(f"{fai} is {MAX_FAI_BYTES} bytes or more: not a .fai index")
    document = cohort.plan_document(samples, cohort.fai_contigs(text.decode()), count, reference)
    manifest = layout.cohort_prefix(lake_root, version, project) + cohort.MANIFEST
    built = None
    if manifest[len(results):] in listing:
        built = json.loads(read_head(manifest, 16 * 1024 * 1024)).get("key")
    plan.update(regions=[r["id"] for r in document["regions"]], key=document["key"])
    if built == document["key"] and not params.get("force"):
        plan["reason"] = f"the cohort of these {len(samples)} sample(s) and regions is built (plan {built})"
        return plan
    uri = layout.cohort_plan_uri(lake_root, version, project, document["key"])
    write_text(uri, json.dumps(document, indent=1))  # the same key always names the same contents
    plan.update(build=True, plan_uri=uri,
                reason=f"{len(samples)} sample(s) in {len(document['regions'])} region(s); the cohort built "
                       f"{'has plan ' + built if built else 'does not exist'}")
    return plan


def built_cohort(plan: dict[str, Any], read_head: Callable[[str, int], bytes] | None = None) -> dict[str, Any]:
    """What the cohort of ``plan``'s project and version holds now (its manifest), or why there is none."""
    if read_head is None:
        from hooks import lake
        from platform_settings import PlatformSettings

        settings = PlatformSettings.resolve()
        read_head = lambda uri, max_bytes: lake.read_head(settings, uri, max_bytes)  # noqa: E731
    vcf = plan["cohort_vcf"]
    try:
        built = json.loads(read_head(vcf.rsplit("/", 1)[0] + "/" + cohort.MANIFEST, 16 * 1024 * 1024))
    except FileNotFoundError:
        return {"cohort_vcf": None, "reason": plan["reason"] or "no cohort is built"}
    return {"cohort_vcf": built["vcf"], "index": built["index"], "samples": len(built["samples"]),
            "sites": built["sites"], "plan": built["key"]}


def plan_for_airflow(params: dict[str, Any], stopped: str = "") -> dict[str, Any]:
    from hooks import lake
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve()
    plan = plan_cohort(dict(params), lake_root=settings.lake_root,
                       list_files=lambda prefix: lake.list_files(settings, prefix),
                       read_head=lambda uri, max_bytes: lake.read_head(settings, uri, max_bytes),
                       write_text=lambda uri, text: lake.write_text(settings, uri, text), stopped=stopped)
    print(f"germline cohort: {'build' if plan['build'] else 'nothing to build'}: {plan['reason']}; "
          f"{plan['cohort_vcf']}", flush=True)
    return plan
