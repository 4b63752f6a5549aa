"""Planning a regenie GWAS run: the DAG's Params, and the checks of its first task, before any file system is
created or any job submitted.

- Inputs: genotypes, a phenotype file (FID IID trait...) and an optional covariate file; empty values mean the
  project's files under ``<lake>/raw/<project>/gwas/``. Genotypes are a PLINK 1 fileset
  (``<genotypes>.bed/.bim/.fam``), a VCF (``.vcf.gz``) or BCF (``.bcf``) that step 1 converts with plink2, or,
  with ``germline_version``, the project's joint-called germline cohort at that version
  (``layout.cohort_vcf``). One listing per input folder finds them; the phenotype file's header line (one
  ranged read) gives the traits. Nothing is counted or converted here: step 1 plans the step-2 chunks from the
  .bim it reads or converts, inside its job.
- Engine: ``regenie`` (its image on AWS) or ``plink2 --glm`` (Debian package); ``auto`` picks regenie on AWS
  and, on the local backend, regenie when one is on PATH (asked when the run is planned), else plink2.
  ``regenie_image`` names the Batch job definition (and so the image and regenie version) of the run's jobs;
  ``step1_predictions`` reuses a regenie step 1 model (a ``_pred.list`` with its LOCO files beside it, linked
  to the file system like the other inputs) instead of fitting it again.
- File system: the folders of the inputs are linked to the run's FSx file system (read once from S3, shared
  by every job), and its ``/output`` to ``results/regenie_gwas/<version>/project=<p>/``, where the export
  puts the results. Overlapping links are refused, as FSx refuses them.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable

from genomics_steps import layout
from genomics_steps.gwas import ENGINES, PIPELINE
from genomics_steps.names import (FILE_URI, GENOTYPES_VCF, JOB_DEFINITION, LABEL, LOCO_FILE, bad_items,
                                  problems_in)

from hooks.fsx import DEPLOYMENT_TYPES, PERSISTENT_2_THROUGHPUTS, valid_capacity
from pipeline_plan import RunConfigError

TRAIT_TYPES = ("quantitative", "binary")
MAX_TRAITS = 1000
MAX_LINKS = 8  # data repository associations per file system
NO_COVARIATES = "none"
# The Batch job definition of the GWAS jobs (name, or name:revision): Batch cannot override a job's image, so
# the regenie version of a run is chosen by the job definition whose image carries it.
DEFAULT_JOB_DEFINITION = "genomics-gwas"
PREDICTIONS_SUFFIX = "_pred.list"
MAX_PREDICTIONS_BYTES = 1 << 20
OPTIONAL_STRING = ["null", "string"]


def gwas_params() -> dict[str, Any]:
    from airflow.sdk import Param

    label, uri = LABEL.schema(), FILE_URI.schema(optional=True)
    # "null" in the type lets the trigger form leave a field empty (the field is required otherwise).
    return {
        "project": Param("demo", type="string", pattern=label, title="Project",
                         description="Project of the cohort (tags, lake paths, table partitions): letters, digits and "
                                     "_ . - (up to 64), starting with a letter or digit."),
        "genotypes": Param(None, type=OPTIONAL_STRING, pattern=uri, title="Genotypes",
                           description="s3:// (file:// locally) URI of a PLINK 1 fileset without extension (<uri>.bed, .bim, .fam), or "
                                       "of a VCF (.vcf.gz, bgzipped) or BCF (.bcf) that step 1 converts with "
                                       "plink2 (FID and IID are both the VCF's sample name); empty: the lake's "
                                       "raw/<project>/gwas/cohort, or the germline cohort of germline_version."),
        "germline_version": Param(None, type=OPTIONAL_STRING, pattern=LABEL.schema(optional=True),
                                  title="Germline cohort version",
                                  description="Genotypes from the project's joint-called germline cohort at this "
                                              "germline pipeline version (results/germline/<version>/"
                                              "project=<project>/cohort/cohort.vcf.gz); leave genotypes empty."),
        "phenotypes": Param(None, type=OPTIONAL_STRING, pattern=uri, title="Phenotypes",
                            description="s3:// or file:// URI of a tab-separated file FID IID <trait>...; leave empty for "
                                        "raw/<project>/gwas/phenotypes.tsv. Binary traits: 0 control, 1 case."),
        "covariates": Param(None, type=OPTIONAL_STRING, title="Covariates",
                            pattern=FILE_URI.schema(optional=True, alternatives=(NO_COVARIATES,)),
                            description='s3:// or file:// URI of a file FID IID <covariate>...; leave empty for '
                                        'raw/<project>/gwas/covariates.tsv; type "none" for no covariates.'),
        "traits": Param([], type="array", items={"type": "string", "pattern": label}, maxItems=MAX_TRAITS,
                        uniqueItems=True, title="Traits",
                        description="Phenotype columns to test, one per line; leave empty to test every column of the "
                                    "phenotype file."),
        "trait_type": Param("quantitative", type="string", enum=list(TRAIT_TYPES), title="Trait type",
                            description="quantitative, or binary (phenotype 0 control, 1 case)."),
        "block_size": Param(1000, type="integer", minimum=100, maximum=10000, title="Block size",
                            description="regenie --bsize: variants per genotype block in both steps."),
        "variants_per_job": Param(200_000, type="integer", minimum=100, maximum=10_000_000,
                                  title="Variants per step-2 job",
                                  description="Step 2 runs as one array job over chunks of at most this many "
                                              "variants, each within one chromosome."),
        "engine": Param("auto", type="string", enum=["auto", *ENGINES], title="Association engine",
                        description="regenie, or plink2 --glm (Debian package, runs locally); auto: regenie on "
                                    "AWS, and locally regenie when one is on PATH, else plink2."),
        "regenie_image": Param(DEFAULT_JOB_DEFINITION, type="string", pattern=JOB_DEFINITION.schema(),
                               title="GWAS job definition",
                               description="Batch job definition (name or name:revision) of the GWAS jobs: its "
                                           "image's regenie is the version the run uses. Ignored locally, where "
                                           "the regenie on PATH runs."),
        "step1_predictions": Param(None, type=OPTIONAL_STRING, pattern=FILE_URI.schema(optional=True),
                                   title="Step 1 predictions",
                                   description="URI of a regenie step 1 <prefix>_pred.list whose LOCO files are "
                                               "beside it (an earlier run's results/.../step1/fit_pred.list "
                                               "copied out of that run's results): step 1's model is not fitted "
                                               "again, step 2 uses these. Its traits must be this run's traits."),
        "pipeline_version": Param("1.0", type="string", pattern=label, title="Pipeline version",
                                  description="Results are kept under results/regenie_gwas/<version>/: a name "
                                              "such as 1.0 (letters, digits and _ . -)."),
        "fsx_deployment_type": Param("SCRATCH_2", type="string", enum=list(DEPLOYMENT_TYPES),
                                     title="FSx deployment type",
                                     description="SCRATCH_2 for a run's scratch space; PERSISTENT_2 when the "
                                                 "throughput below matters."),
        "fsx_capacity_gib": Param(1200, type="integer", minimum=1200, title="FSx capacity (GiB)",
                                  description="Size of the run's file system in GiB: 1200, 2400, then steps of 2400."),
        "fsx_throughput": Param(125, type="integer", enum=list(PERSISTENT_2_THROUGHPUTS),
                                title="PERSISTENT_2 throughput (MB/s/TiB)",
                                description="MB/s per TiB stored; used by PERSISTENT_2 only."),
    }


# Endings a genotypes URI may not have, each with what to give instead: a VCF is taken bgzipped (or as BCF),
# as cohorts are kept, and a PLINK fileset by its name without extension.
_NOT_GENOTYPES = {".vcf": "a VCF must be bgzipped (.vcf.gz) or a BCF (.bcf)",
                  ".vcf.bgz": "name a bgzipped VCF .vcf.gz",
                  ".bed": "a PLINK 1 fileset is named without its extension",
                  ".bim": "a PLINK 1 fileset is named without its extension",
                  ".fam": "a PLINK 1 fileset is named without its extension",
                  ".tbi": "name the VCF, not its index", ".csi": "name the VCF, not its index"}


def genotype_problem(value: str) -> str | None:
    """Why a genotypes URI (already a FILE_URI) cannot be read as genotypes, or None."""
    for suffix, why in _NOT_GENOTYPES.items():
        if value.endswith(suffix):
            return f"genotypes {value!r}: {why}"
    if value.endswith((".vcf.gz", ".bcf")) and not GENOTYPES_VCF.ok(value):
        return GENOTYPES_VCF.problem("genotypes", value)
    return None


def genotype_files(uri: str) -> set[str]:
    """The files a genotypes URI stands for: the VCF or BCF itself, or the three files of a PLINK 1 fileset."""
    if GENOTYPES_VCF.ok(uri):
        return {uri}
    return {f"{uri}.{ext}" for ext in ("bed", "bim", "fam")}


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0] + "/"


def _prediction_files(uri: str, text: bytes, problems: list[str]) -> dict[str, str]:
    """trait -> URI of its LOCO file, from a regenie _pred.list (lines "<trait> <path>"). The paths in it are
    where step 1 wrote them; the files are looked for beside the list, by name."""
    if len(text) >= MAX_PREDICTIONS_BYTES:
        problems.append(f"step1_predictions {uri} is larger than {MAX_PREDICTIONS_BYTES} bytes: not a _pred.list")
        return {}
    files: dict[str, str] = {}
    for n, line in enumerate(text.decode(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        name = fields[-1].rsplit("/", 1)[-1] if len(fields) == 2 else ""
        if not (LABEL.ok(fields[0]) and LOCO_FILE.ok(name)):
            problems.append(f"step1_predictions {uri} line {n} is not '<trait> <path>.loco': {line[:200]!r}")
            return {}
        if fields[0] in files:
            problems.append(f"step1_predictions {uri} lists trait {fields[0]} twice")
        files[fields[0]] = _folder(uri) + name
    if not files:
        problems.append(f"step1_predictions {uri} lists no trait")
    return files


def plan_gwas(params: dict[str, Any], *, lake_root: str, backend: str, list_files: Callable[[str], list[str]],
              read_head: Callable[[str], bytes], regenie_here: bool) -> dict[str, Any]:
    """Check ``params`` and plan the run, or raise RunConfigError listing every problem."""
    problems: list[str] = []
    project, version = params.get("project"), params.get("pipeline_version")
    problems += problems_in([(LABEL, "project", project), (LABEL, "pipeline_version", version)])
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))
    default = layout.gwas_input_prefix(lake_root, project)
    germline_version = params.get("germline_version") or ""
    cohort = ""  # the germline cohort VCF named by germline_version
    if germline_version:
        if not LABEL.ok(germline_version):
            problems.append(LABEL.problem("germline_version", germline_version))
        elif params.get("genotypes"):
            problems.append(f"genotypes {params['genotypes']!r} and germline_version {germline_version!r} both "
                            "name the genotypes: give one of them")
        else:
            cohort = layout.cohort_vcf(lake_root, germline_version, project)
    uris = {"genotypes": params.get("genotypes") or cohort or default + "cohort",
            "phenotypes": params.get("phenotypes") or default + "phenotypes.tsv",
            "covariates": params.get("covariates") or default + "covariates.tsv"}
    for name, value in uris.items():
        if name == "covariates" and value == NO_COVARIATES:
            continue
        if not FILE_URI.ok(value):
            problems.append(FILE_URI.problem(name, value))
        elif name == "genotypes" and (problem := genotype_problem(value)):
            problems.append(problem)
        elif backend == "aws" and not value.startswith("s3://"):
            problems.append(f"{name} {value!r} is a local path; on AWS the inputs are S3 objects linked to FSx")
    traits = params.get("traits") or []
    if not isinstance(traits, list):
        problems.append(f"traits must be a list of phenotype column names, got {traits!r}")
        traits = []
    elif bad := bad_items(LABEL, "traits", traits):
        problems.append(bad)
        traits = []
    elif len(set(traits)) != len(traits):
        problems.append("traits contains duplicates")
    trait_type = params.get("trait_type", "quantitative")
    if trait_type not in TRAIT_TYPES:
        problems.append(f"trait_type {trait_type!r} must be one of {TRAIT_TYPES}")
    for name, low, high in (("block_size", 100, 10_000), ("variants_per_job", 100, 10_000_000)):
        value = params.get(name)
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            problems.append(f"{name} must be an integer from {low} to {high}, got {value!r}")
    engine = params.get("engine", "auto")
    if engine == "auto":
        engine = "regenie" if backend == "aws" or regenie_here else "plink2"
    if engine not in ENGINES:
        problems.append(f"engine {engine!r} must be auto or one of {ENGINES}")
    elif engine == "regenie" and backend == "local" and not regenie_here:
        problems.append("engine regenie: regenie is not installed on this machine (Debian does not package it); "
                        "use engine plink2 here, or regenie on AWS Batch with the docker/gwas image")
    job_definition = params.get("regenie_image") or DEFAULT_JOB_DEFINITION
    if not JOB_DEFINITION.ok(job_definition):
        problems.append(JOB_DEFINITION.problem("regenie_image", job_definition))
    predictions = params.get("step1_predictions") or ""
    if predictions:
        if not (FILE_URI.ok(predictions)
                and predictions.endswith(PREDICTIONS_SUFFIX)):
            problems.append(f"step1_predictions {predictions!r} must be an s3:// or file:// URI of a regenie "
                            f"<prefix>{PREDICTIONS_SUFFIX}")
        elif backend == "aws" and not predictions.startswith("s3://"):
            problems.append(f"step1_predictions {predictions!r} is a local path; on AWS it is linked to FSx from S3")
        if engine == "plink2":
            problems.append("step1_predictions are regenie's step 1 model: they need engine regenie, not plink2")
    deployment = params.get("fsx_deployment_type", "SCRATCH_2")
    if deployment not in DEPLOYMENT_TYPES:
        problems.append(f"fsx_deployment_type {deployment!r} must be one of {DEPLOYMENT_TYPES}")
    if not valid_capacity(params.get("fsx_capacity_gib")):
        problems.append(f"fsx_capacity_gib must be 1200, 2400 or a multiple of 2400, got "
                        f"{params.get('fsx_capacity_gib')!r}")
    if deployment == "PERSISTENT_2" and params.get("fsx_throughput") not in PERSISTENT_2_THROUGHPUTS:
        problems.append(f"fsx_throughput must be one of {PERSISTENT_2_THROUGHPUTS} for PERSISTENT_2")
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))

    wanted = genotype_files(uris["genotypes"]) | {uris["phenotypes"]}
    if cohort:
        wanted.add(cohort + ".tbi")  # the germline cohort is complete once indexed
    if uris["covariates"] != NO_COVARIATES:
        wanted.add(uris["covariates"])
    if predictions:
        wanted.add(predictions)
    folders = sorted({_folder(u) for u in wanted})
    present = {folder + path for folder in folders for path in list_files(folder)}
    missing = sorted(wanted - present)
    if cohort and {cohort, cohort + ".tbi"} & set(missing):
        problems.append(f"germline_version {germline_version!r}: project {project} has no joint-called germline "
                        f"cohort at {cohort} (with its .tbi): run germline at that version first")
        missing = [m for m in missing if m not in (cohort, cohort + ".tbi")]
    if missing:
        problems.append(f"missing input file(s): {missing}")
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))
    predicted: dict[str, str] = {}
    if predictions:
        predicted = _prediction_files(predictions, read_head(predictions, MAX_PREDICTIONS_BYTES), problems)
        absent = sorted(set(predicted.values()) - present)
        if absent:
            problems.append(f"step1_predictions {predictions} names LOCO file(s) that are not beside it: {absent[:10]}")
    header = read_head(uris["phenotypes"]).decode(errors="replace").split("\n", 1)[0].split()
    if header[:2] != ["FID", "IID"] or len(header) < 3:
        problems.append(f"{uris['phenotypes']} must start with a header line FID IID <trait>..., got {header[:5]}")
    else:
        columns = header[2:]
        unknown = [t for t in traits if t not in columns]
        if unknown:
            problems.append(f"trait(s) {unknown} are not columns of {uris['phenotypes']} ({columns[:20]})")
        traits = traits or columns
        bad = [t for t in traits if not LABEL.ok(t)]
        if bad:
            problems.append(f"phenotype column(s) {bad[:5]!r} are not usable names ({LABEL.description}): "
                            "rename them or list the traits to test")
        if len(traits) > MAX_TRAITS:
            problems.append(f"at most {MAX_TRAITS} traits per run, the file has {len(traits)}")
        if predicted and sorted(predicted) != sorted(traits):
            problems.append(f"step1_predictions {predictions} has the traits {sorted(predicted)[:20]}, this run "
                            f"tests {sorted(traits)[:20]}: they must be the same")
    results = layout.results_prefix(lake_root, PIPELINE, version, project)
    inputs = [f for f in folders if not any(f != g and f.startswith(g) for g in folders)]  # nested: the outer
    overlapping = [f for f in inputs if f.startswith(results) or results.startswith(f)]
    if overlapping:
        problems.append(f"input folder(s) {overlapping} overlap the results prefix {results}: FSx cannot link both")
    if len(inputs) + 1 > MAX_LINKS:
        problems.append(f"the inputs are in {len(inputs)} folders; a file system links at most {MAX_LINKS - 1}")
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))

    args = ["--engine", engine, "--genotypes", uris["genotypes"], "--phenotypes", uris["phenotypes"],
            "--covariates", uris["covariates"], "--traits", ",".join(traits), "--trait-type", trait_type,
            "--block-size", str(params["block_size"]), "--variants-per-job", str(params["variants_per_job"]),
            "--pipeline-version", version]
    if predictions:
        args += ["--step1-predictions", predictions]
    command = ["python3", "-m", "genomics_steps.gwas"]
    return {
        "project": project,
        "traits": traits,
        "engine": engine,
        "job_definition": job_definition,
        "genotypes_format": "vcf" if GENOTYPES_VCF.ok(uris["genotypes"]) else "plink1",
        "step1_predictions": predictions,
        "inputs": uris,
        "fsx_inputs": inputs,
        "results": results,
        # one key per step: a multiple_outputs XCom is read one level deep
        **{f"{step}_command": [*command, step, *args] for step in ("step1", "step2", "merge")},
    }


def plan_for_airflow(params: dict[str, Any]) -> dict[str, Any]:
    from hooks import lake
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve()
    plan = plan_gwas(dict(params), lake_root=settings.lake_root, backend=settings.backend,
                     list_files=lambda prefix: lake.list_files(settings, prefix),
                     read_head=lambda uri, max_bytes=65536: lake.read_head(settings, uri, max_bytes),
                     regenie_here=shutil.which("regenie") is not None)
    print(f"regenie_gwas: {len(plan['traits'])} trait(s) {plan['traits'][:10]} with {plan['engine']} (job "
          f"definition {plan['job_definition']}, step 1 predictions {plan['step1_predictions'] or 'fitted'}, genotypes "
          f"{'a VCF converted by step 1' if plan['genotypes_format'] == 'vcf' else 'a PLINK 1 fileset'}); inputs "
          f"{plan['inputs']}; FSx links {plan['fsx_inputs']} and /output -> {plan['results']}")
    return plan
