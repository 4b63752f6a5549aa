"""Planning a pipeline run: check the run config, resolve the samples, decide what is already done, and split
the rest into fan-out units. Everything here happens in the DAG's first task, before any job is submitted.

- Samples: a list, or ``"all approved"`` (the sample registry's approved samples of the project), or
  ``"all found"`` (every sample the input prefix holds). With a ``samplesheet``, "all approved" (the default)
  and "all found" mean the sheet's samples; a list selects among them.
- Inputs and reference: one listing of the input prefix finds every sample's reads (genomics_steps.read_inputs:
  BCL Convert's naming and ``<sample>_R1.fastq.gz``, lanes, single-end), or the samplesheet names them (one
  listing per folder it names checks they exist); one listing of the reference prefix finds its files and built
  index. A missing file refuses the run, naming what is missing. Each planned sample's reads go to the run's
  reads manifest, which the first step reads.
- Done: one listing of ``results/<pipeline>/<version>/project=<p>/`` (paginated: 1,000 keys a call on S3)
  finds the samples whose every step wrote its metrics.json. They are not submitted again unless ``force``.
  One listing, not one existence check per file: 1,536 samples x 10 files is ~16 S3 calls.
- Units: ``mapped`` gives one unit per sample (one Batch job, one trigger, one mapped task instance each);
  ``array`` gives units of up to ARRAY_CHUNK samples (one array job per step and unit). ``auto`` maps up to
  AUTO_MAPPED_MAX samples, so large runs stay far below max_map_length and the triggerer's capacity.

The DAGs expand a mapped task group over the units: every step of a unit runs as soon as that unit's
previous step is done.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable

from genomics_steps import gates, layout, read_inputs
from genomics_steps.names import (ARRAY_CHUNK, LABEL, LOCATION, SAMPLE_ID, SAMPLESHEET, bad_items, list_schema,
                                  problems_in, split_list)

from airflow_compat import AirflowFailException

ALL_APPROVED = "all approved"
ALL_FOUND = "all found"  # every sample of the input prefix (or samplesheet)
FAN_OUT_MODES = ("auto", "mapped", "array")
AUTO_MAPPED_MAX = 100
MAX_SAMPLES = 10_000
FAILURE_POLICIES = ("continue", "stop")  # on_sample_failure (see run_outcomes)
DEFAULT_MAX_FAILED_FRACTION = 0.1
GATE_PARAMS = ("min_reads", "min_q30_rate", "min_mapping_rate")  # the steps' QC minimums (genomics_steps.gates)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    steps: list[str]  # a sample is done when every one of these steps is complete
    reference_files: list[str]  # files the reference must have (in references/<name>/)
    index_tool: str  # the index built once per reference (references/<name>/index/<tool>/)


class RunConfigError(AirflowFailException, ValueError):
    """The run config cannot run; the message lists every problem found. Airflow fails the task at once,
    without its retries: the same config would be refused again (errors reaching the lake keep them)."""


def refuse_unknown_keys(conf: Mapping[str, Any] | None, known: Iterable[str]) -> None:
    """Refuse run config keys the DAG has no Param for, naming the closest known key for each. Airflow
    merges unknown keys into ``params`` and the tasks never read them, so a misspelt key would silently
    run with the default of the key meant."""
    known = sorted(known)
    unknown = sorted(set(conf or {}) - set(known), key=str)
    if not unknown:
        return
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1)
        problems.append(f"unknown key {key!r}; " + (f"did you mean {close[0]!r}?" if close else
                                                    f"the keys are {', '.join(known)}"))
    raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))


def read_samples(value: Any) -> Any:
    """The ``samples`` Param as planning uses it: ``ALL_APPROVED``, or a list of ids. A text (the trigger
    form's box) is split at commas and line breaks, whitespace and blank items dropped; the ids are checked
    afterwards like a JSON list's. Anything else is returned as it is, for the checks to refuse."""
    if not isinstance(value, str):
        return value
    if value.strip() in (ALL_APPROVED, ALL_FOUND):
        return value.strip()
    return split_list(value)


def pipeline_params(default_samples: Any = ALL_APPROVED) -> dict[str, Any]:
    """The Params both pipeline DAGs take; the trigger form validates them against these schemas."""
    from airflow.sdk import Param

    label = LABEL.schema()
    return {
        "project": Param("demo", type="string", pattern=label, title="Project",
                         description="Project the samples belong to (tags, lake paths, table partitions): letters, "
                                     "digits and _ . - (up to 64), starting with a letter or digit."),
        # type array-or-string: Airflow 3.3's form shows it as one text box (a pasted list, "all approved", or a
        # JSON list) and the server checks it against the matching half before a run is created.
        "samples": Param(
            default_samples,
            type=["array", "string"],
            title="Samples",
            description=f'Sample ids, one per line or separated by commas (pasted from a sheet works), or '
                        f'"{ALL_APPROVED}" for every approved sample of the project in the sample registry (with '
                        f'a samplesheet: its samples), or "{ALL_FOUND}" for every sample whose reads are under '
                        "Reads location (or in the samplesheet). "
                        "Each id: letters, digits and _ . - (up to 128), starting with a letter or digit.",
            items={"type": "string", "pattern": SAMPLE_ID.schema()},
            minItems=1,
            maxItems=MAX_SAMPLES,
            uniqueItems=True,
            pattern=list_schema(SAMPLE_ID, alternatives=(ALL_APPROVED, ALL_FOUND)),
        ),
        "reference": Param("synthetic-v1", type="string", pattern=label, title="Reference",
                           description="Name of the reference bundle in the lake's references/<reference>/ "
                                       "(the demo's is synthetic-v1)."),
        "pipeline_version": Param("1.0", type="string", pattern=label, title="Pipeline version",
                                  description="A name such as 1.0: outputs are keyed by it, and a rerun with the "
                                              "same version skips samples whose outputs exist."),
        "force": Param(False, type="boolean", title="Force",
                       description="Run every sample again even if its outputs exist."),
        "fan_out": Param("auto", type="string", enum=list(FAN_OUT_MODES), title="Fan-out",
                         description=f"mapped: one Batch job per sample; array: Batch array jobs of up to "
                                     f"{ARRAY_CHUNK} samples; auto: mapped up to {AUTO_MAPPED_MAX} samples."),
        # Optional: "null" in the type is what lets the trigger form leave the field empty.
        "input_uri": Param(None, type=["null", "string"], pattern=LOCATION.schema(optional=True),
                           title="Reads location",
                           description="s3:// (file:// locally) prefix ending in / that holds the reads: a BCL "
                                       "Convert output folder (<sample>_S1_L001_R1_001.fastq.gz ...) or "
                                       "<sample>_R1.fastq.gz and _R2 (R1 only: single-end); leave empty for the "
                                       "lake's raw/<project>/."),
        "samplesheet": Param(None, type=["null", "string"], pattern=SAMPLESHEET.schema(optional=True),
                             title="Samplesheet",
                             description="s3:// (file:// locally) URI of a CSV with columns sample,fastq_1,fastq_2 "
                                         "(fastq_2 empty: single-end), optionally lane or run (rnaseq: "
                                         "strandedness); paths relative to its folder. Its samples run unless "
                                         "Samples is a list. Leave empty to find the reads under Reads location."),
        "on_sample_failure": Param("continue", type="string", enum=list(FAILURE_POLICIES), title="On sample failure",
                                   description="continue: publish every sample that completed, then fail the run "
                                               "naming the failed ones; stop: publish nothing if any sample "
                                               "failed."),
        "max_failed_fraction": Param(DEFAULT_MAX_FAILED_FRACTION, type="number", minimum=0, maximum=1,
                                     title="Most samples that may fail",
                                     description="If more than this fraction of the samples run fails, nothing is "
                                                 "published: something systematic is wrong (0.1 = 10%)."),
        # QC gates (genomics_steps.gates); defaults after nf-core/rnaseq's (README, "QC gates").
        "min_reads": Param(gates.DEFAULT_MIN_READS, type="integer", minimum=1, title="QC: minimum reads",
                           description="Fewer reads excludes a sample: reads passing fastp's filters (rnaseq), "
                                       "primary reads after alignment (germline); each mate counts."),
        "min_q30_rate": Param(gates.DEFAULT_MIN_Q30_RATE, type="number", minimum=0, maximum=1,
                              title="QC: minimum Q30 rate",
                              description="rnaseq: a lower fraction of bases at Q30 or better (reads as sequenced) "
                                          "excludes a sample; 0 leaves this gate open."),
        "min_mapping_rate": Param(gates.DEFAULT_MIN_MAPPING_RATE, type="number", minimum=0, maximum=1,
                                  title="QC: minimum mapping rate",
                                  description="A lower mapped fraction (salmon; germline: samtools) flags a sample "
                                              "in qc_metrics; it is still published."),
    }


def plan_run(
    spec: PipelineSpec,
    params: dict[str, Any],
    *,
    lake_root: str,
    backend: str,
    list_files: Callable[[str], list[str]],
    approved_samples: Callable[[str], list[str]],
    max_map_length: int,
    read_text: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Check ``params`` and plan the run, or raise RunConfigError listing every problem. ``read_text`` reads a
    samplesheet (FileNotFoundError if absent). The plan's ``reads`` holds each sample to run's reads."""
    problems: list[str] = []
    project, reference, version = params.get("project"), params.get("reference"), params.get("pipeline_version")
    problems += problems_in([(LABEL, "project", project), (LABEL, "reference", reference),
                             (LABEL, "pipeline_version", version)])
    fan_out = params.get("fan_out", "auto")
    if fan_out not in FAN_OUT_MODES:
        problems.append(f"fan_out {fan_out!r} must be one of {FAN_OUT_MODES}")
    force = params.get("force", False)
    if not isinstance(force, bool):
        problems.append(f"force must be true or false, got {force!r}")
    if params.get("on_sample_failure", "continue") not in FAILURE_POLICIES:
        problems.append(f"on_sample_failure {params.get('on_sample_failure')!r} must be one of {FAILURE_POLICIES}")
    fraction = params.get("max_failed_fraction", DEFAULT_MAX_FAILED_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        problems.append(f"max_failed_fraction must be a number from 0 to 1, got {fraction!r}")
    input_uri = params.get("input_uri") or ""
    if input_uri and not LOCATION.ok(input_uri):
        problems.append(LOCATION.problem("input_uri", input_uri))
    elif input_uri.startswith("file://") and backend == "aws":
        problems.append(f"input_uri {input_uri!r} is a local path; Batch jobs on AWS read s3:// URIs")
    sheet_uri = params.get("samplesheet") or ""
    if sheet_uri and not SAMPLESHEET.ok(sheet_uri):
        problems.append(SAMPLESHEET.problem("samplesheet", sheet_uri))
    elif sheet_uri.startswith("file://") and backend == "aws":
        problems.append(f"samplesheet {sheet_uri!r} is a local path; on AWS it is an s3:// URI")
    if sheet_uri and input_uri:
        problems.append("give a samplesheet or an input_uri, not both: the samplesheet names every file")
    problems += gates.threshold_problems({name: params[name] for name in GATE_PARAMS if name in params})
    if problems:  # nothing below can be trusted
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))

    given = params.get("samples")
    samples = read_samples(given)
    if sheet_uri:
        return _plan_units(spec, params, *_sheet_reads(spec, sheet_uri, samples, backend, list_files,
                                                                 read_text), lake_root=lake_root,
                           list_files=list_files, max_map_length=max_map_length)
    input_prefix = input_uri or layout.raw_prefix(lake_root, project)
    found = None  # listed once, after the samples are known to be valid
    if samples == ALL_FOUND:
        found = read_inputs.discover(input_prefix, list_files(input_prefix))
        samples = sorted(found.samples) + sorted(found.broken)
        if not samples:
            problems.append(f"no sample's reads under {input_prefix}")
    elif samples == ALL_APPROVED:
        samples = approved_samples(project)
        if not samples:
            problems.append(f"the sample registry has no approved samples in project {project!r}")
    if not isinstance(samples, list) or not samples:
        problems.append(f'samples must be a non-empty list of sample ids or "{ALL_APPROVED}", got {given!r}')
        samples = []
    bad = bad_items(SAMPLE_ID, "samples", samples)
    if bad:
        problems.append(bad)
    repeated = sorted({str(s) for s in samples if samples.count(s) > 1})
    if repeated:
        problems.append(f"samples lists {repeated[:5]!r} more than once")
    if len(samples) > MAX_SAMPLES:
        problems.append(f"a run takes at most {MAX_SAMPLES} samples, got {len(samples)}")
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))
    found = found or read_inputs.discover(input_prefix, list_files(input_prefix))
    no_reads = [s for s in samples if s not in found.samples and s not in found.broken]
    if no_reads:
        problems.append(f"{len(no_reads)} sample(s) have no reads (<sample>_R1.fastq.gz, or "
                        f"<sample>_S<n>_L<lane>_R1_001.fastq.gz) under {input_prefix}: "
                        f"{no_reads[:10]}{' ...' if len(no_reads) > 10 else ''}")
    problems += [f"sample {s!r} under {input_prefix}: {found.broken[s]}" for s in samples if s in found.broken]
    return _plan_units(spec, params, samples, found.samples, found.summary(), problems, lake_root=lake_root,
                       list_files=list_files, max_map_length=max_map_length)


def _sheet_reads(spec: PipelineSpec, sheet_uri: str, samples: Any, backend: str,
                 list_files: Callable[[str], list[str]], read_text: Callable[[str], str] | None,
                 ) -> tuple[list[str], dict[str, read_inputs.SampleReads], str, list[str]]:
    """The samplesheet's samples (all, or the ``samples`` list among them), their reads, a summary and every
    problem of the sheet and of the selection (raised together with the reference's by _plan_units)."""
    if read_text is None:
        raise RunConfigError("run config refused:\n - this deployment cannot read a samplesheet")
    try:
        text = read_text(sheet_uri)
    except FileNotFoundError:
        raise RunConfigError(f"run config refused:\n - samplesheet {sheet_uri!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise RunConfigError(f"run config refused:\n - samplesheet {sheet_uri!r} is not UTF-8 text: {exc}") from None
    sheet = read_inputs.parse_samplesheet(sheet_uri, text, strandedness=spec.name == "rnaseq",
                                          local_files=backend != "aws")
    problems = [f"samplesheet {sheet_uri} {p}" for p in sheet.problems]
    problems += [f"samplesheet {sheet_uri} {p}" for p in read_inputs.missing_files(sheet, list_files)]
    if samples in (ALL_APPROVED, ALL_FOUND):
        chosen = list(sheet.samples)
    elif isinstance(samples, list) and samples:
        if bad := bad_items(SAMPLE_ID, "samples", samples):
            problems.append(bad)
        if len(set(map(str, samples))) != len(samples):
            problems.append("samples contains duplicates")
        absent = [s for s in samples if s not in sheet.samples]
        if absent and not sheet.problems:
            problems.append(f"{len(absent)} sample(s) are not in samplesheet {sheet_uri}: {absent[:10]}")
        chosen = list(samples)
    else:
        problems.append(f'samples must be a non-empty list of sample ids or "{ALL_APPROVED}", got {samples!r}')
        chosen = []
    if len(chosen) > MAX_SAMPLES:
        problems.append(f"a run takes at most {MAX_SAMPLES} samples, got {len(chosen)}")
    single = sum(not sheet.samples[s].paired for s in chosen if s in sheet.samples)
    lanes = sum(len(sheet.samples[s].r1) > 1 for s in chosen if s in sheet.samples)
    summary = (f"samplesheet {sheet_uri}: {len(sheet.samples)} sample(s), {len(chosen)} selected: "
               f"{len(chosen) - single} paired-end, {single} single-end, {lanes} with several lanes or runs")
    return chosen, sheet.samples, summary, problems


def _plan_units(spec: PipelineSpec, params: dict[str, Any], samples: list[str],
                reads: dict[str, read_inputs.SampleReads], inputs: str, problems: list[str], *, lake_root: str,
                list_files: Callable[[str], list[str]], max_map_length: int) -> dict[str, Any]:
    """Check the reference, find what is done, and cut what is left into units (see the module's doc)."""
    project, reference, version = params["project"], params["reference"], params["pipeline_version"]
    fan_out, force = params.get("fan_out", "auto"), params.get("force", False)
    reference_prefix = layout.reference_prefix(lake_root, reference)
    reference_listing = set(list_files(reference_prefix))
    missing_ref = [f for f in spec.reference_files if f not in reference_listing]
    if missing_ref:
        problems.append(f"reference {reference!r} lacks {missing_ref} under {reference_prefix}")
    if problems:
        raise RunConfigError("run config refused:\n - " + "\n - ".join(problems))

    done = set() if force else layout.completed_samples(
        list_files(layout.results_prefix(lake_root, spec.name, version, project)), spec.steps)
    todo = [s for s in samples if s not in done]
    mode = fan_out if fan_out != "auto" else ("mapped" if len(todo) <= AUTO_MAPPED_MAX else "array")
    if mode == "mapped":
        if len(todo) > max_map_length:
            raise RunConfigError(f"run config refused:\n - fan_out mapped would create {len(todo)} task instances "
                                 f"per step, over max_map_length {max_map_length}: use fan_out array or auto")
        units = [[s] for s in todo]
    else:
        units = [todo[i : i + ARRAY_CHUNK] for i in range(0, len(todo), ARRAY_CHUNK)]
    index_files = f"index/{spec.index_tool}/{layout.METRICS}"
    return {
        "project": project,
        "samples": list(samples),
        "todo": todo,
        "done": sorted(set(samples) & done),
        "units": units,
        "fan_out": mode,
        "inputs": inputs,
        "reads": {s: reads[s].to_json() for s in todo},
        "index_needed": index_files not in reference_listing,
    }


def plan_for_airflow(spec: PipelineSpec, params: dict[str, Any], run_id: str,
                     rule: str | None = None) -> dict[str, Any]:
    """plan_run with the deployment's settings, lake, sample registry and max_map_length (in a task); writes the
    run's reads manifest (the same content on a retry) and returns its URI as ``reads_manifest``. ``rule``: how
    the run's samples were chosen (run_samples), for the summary line."""
    from airflow.configuration import conf

    from hooks import backend, lake
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve()

    def read_sheet(uri: str) -> str:
        data = lake.read_head(settings, uri, read_inputs.MAX_SHEET_BYTES + 1)
        if len(data) > read_inputs.MAX_SHEET_BYTES:
            raise RunConfigError(f"run config refused:\n - samplesheet {uri!r} is larger than "
                                 f"{read_inputs.MAX_SHEET_BYTES} bytes")
        return data.decode("utf-8")

    plan = plan_run(
        spec,
        dict(params),
        lake_root=settings.lake_root,
        backend=settings.backend,
        list_files=lambda prefix: lake.list_files(settings, prefix),
        approved_samples=lambda project: backend.sample_registry(settings).approved(project),
        max_map_length=conf.getint("core", "max_map_length", fallback=1024),
        read_text=read_sheet,
    )
    reads = plan.pop("reads")
    plan["reads_manifest"] = ""
    if reads:
        plan["reads_manifest"] = layout.reads_manifest_uri(settings.lake_root, spec.name, run_id)
        lake.write_text(settings, plan["reads_manifest"], json.dumps({"samples": reads}, indent=1, sort_keys=True))
    print(f"{spec.name}: {plan['inputs']}")
    print(f"{spec.name}: {len(plan['samples'])} sample(s); {len(plan['done'])} already done for version "
          f"{params['pipeline_version']}{' (force: running all)' if params.get('force') else ''}; "
          f"{len(plan['todo'])} to run as {len(plan['units'])} {plan['fan_out']} unit(s); "
          f"{spec.index_tool} index {'to build' if plan['index_needed'] else 'present'}"
          f"{f'; samples: {rule}' if rule else ''}")
    return plan
