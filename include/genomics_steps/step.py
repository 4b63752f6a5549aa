"""What every step does around its tool: stage inputs in, run the tool, upload outputs, write metrics, and skip
work that is already done.

A step command builds a ``Step`` with the URIs of its outputs, returns early when ``complete()`` (unless
forced), stages inputs with ``input()``, runs its tools with ``run()`` / ``pipe()`` (argv lists, never a
shell), stages rows for publishing with ``stage_rows()``, and ends with ``finish()``: outputs are uploaded
first and ``metrics.json`` last, so its presence means the step is complete.

A tool that fails ends the job with the tool's exit code, and the tool's own last lines (stderr, and stdout when
it is not the step's data) are the last lines of the job log, where the Airflow task's failure message quotes them from.

A QC gate (``gates.py``) judges the step's figures with ``judge()`` before ``finish()``; when it excludes the
sample, the step calls ``exclude(reason)`` after ``finish()``: the outputs, metrics.json and QC rows are
written as usual, then the job prints ``excluded: <reason>`` as the last line of its log and exits with
``outcomes.EXCLUDED_EXIT_CODE``. A complete step is judged again from its recorded figures (``begin``), so a
rerun excludes the sample again without redoing the work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genomics_steps import gates, layout
from genomics_steps.outcomes import EXCLUDED_EXIT_CODE, EXCLUDED_LINE
from genomics_steps.read_inputs import SampleReads
from genomics_steps.runtime import (
    argument_problems,
    current_sample,
    download,
    exists_uri,
    on_fsx,
    read_uri,
    staging_uri,
    upload,
    write_uri,
)

ERROR_TAIL_LINES = 25

# How each tool tells its version: argv, and a pattern whose first group is the version.
_VERSIONS: dict[str, tuple[list[str], str]] = {
    "fastp": (["fastp", "--version"], r"fastp (\S+)"),
    "salmon": (["salmon", "--version"], r"salmon (\S+)"),
    "bwa": (["bwa"], r"Version: (\S+)"),
    "samtools": (["samtools", "--version"], r"samtools (\S+)"),
    "bcftools": (["bcftools", "--version"], r"bcftools (\S+)"),
    "tabix": (["tabix", "--version"], r"tabix \(htslib\) (\S+)"),
    "plink2": (["plink2", "--version"], r"PLINK (v\S+)"),
    "regenie": (["regenie", "--version"], r"(v?\d[\w.]*)"),
    "fasterq-dump": (["fasterq-dump", "--version"], r"fasterq-dump : (\S+)"),
    "pigz": (["pigz", "--version"], r"pigz (\S+)"),
    "multiqc": (["multiqc", "--version"], r"version (\S+)"),
}


class StepFailed(Exception):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Excluded(Exception):
    """A QC gate excluded the sample; the step's outputs and metrics.json are written (see ``Step.exclude``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = " ".join(reason.split())  # one log line, whatever the reason holds


def tool_version(tool: str) -> str:
    argv, pattern = _VERSIONS[tool]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=30)
    except FileNotFoundError:
        raise StepFailed(f"{tool} is not installed (it comes from the Debian package lists in docker/)", 127) from None
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def threads() -> int:
    """Threads for a tool: the vCPUs the job asked for (the operator passes them as GENOMICS_VCPUS)."""
    try:
        return max(1, int(float(os.environ.get("GENOMICS_VCPUS", "1"))))
    except ValueError:
        return 1


def truthy(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


class Step:
    """One step of one sample (``for_sample``) or of one reference's index (``for_index``). The lake and the
    project come from the job's environment (GENOMICS_*), as the operator sets them on Batch."""

    def __init__(
        self,
        name: str,
        *,
        output_prefix: str,
        outputs: list[str],
        tools: list[str],
        force: bool = False,
        pipeline: str | None = None,
        sample: str | None = None,
        pipeline_version: str | None = None,
    ):
        self.name = name
        self.placed: dict[str, str] = {}  # outputs written elsewhere than the step's prefix: name -> URI
        self.prefix = output_prefix if output_prefix.endswith("/") else output_prefix + "/"
        self.outputs = list(outputs)
        self.force = force
        self.lake, self.project = os.environ["GENOMICS_LAKE_URI"], os.environ["GENOMICS_PROJECT"]
        self.pipeline = pipeline
        self.sample = sample
        self.pipeline_version = pipeline_version
        self.staged: list[str] = []
        self.verdict: gates.Verdict | None = None
        self.finished = False
        self.started = time.time()
        self.work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=os.environ.get("TMPDIR")))
        self.out_dir = self.work / "out"
        self.out_dir.mkdir()
        self.versions = {tool: tool_version(tool) for tool in tools}

    @classmethod
    def for_sample(cls, pipeline: str, name: str, args: argparse.Namespace, outputs: list[str],
                   tools: list[str]) -> Step:
        """The step ``name`` of this job's sample: outputs under results/<pipeline>/<version>/.../<name>/."""
        sample = current_sample()
        prefix = layout.step_prefix(os.environ["GENOMICS_LAKE_URI"], pipeline, args.pipeline_version,
                                    os.environ["GENOMICS_PROJECT"], sample, name)
        return cls(name, output_prefix=prefix, outputs=outputs, tools=tools, force=truthy(args.force),
                   pipeline=pipeline, sample=sample, pipeline_version=args.pipeline_version)

    @classmethod
    def for_index(cls, name: str, args: argparse.Namespace, tool: str, outputs: list[str],
                  tools: list[str]) -> Step:
        """The ``tool`` index of reference ``args.reference``: outputs under references/<ref>/index/<tool>/."""
        prefix = layout.index_prefix(os.environ["GENOMICS_LAKE_URI"], args.reference, tool)
        return cls(name, output_prefix=prefix, outputs=outputs, tools=tools, force=truthy(args.force))

    def uri(self, output: str) -> str:
        return self.placed.get(output, self.prefix + output)

    def sibling(self, step: str) -> str:
        """The output prefix of another step of the same sample (an earlier step's outputs are inputs here)."""
        return layout.step_prefix(self.lake, self.pipeline, self.pipeline_version, self.project, self.sample, step)

    def reads(self, input_prefix: str) -> tuple[str, str]:
        """URIs of this sample's R1 and R2 FASTQ under ``input_prefix`` (empty: the lake's raw/<project>/)."""
        return layout.reads_uris(input_prefix or layout.raw_prefix(self.lake, self.project), self.sample)

    def sample_reads(self, args: argparse.Namespace) -> SampleReads:
        """This sample's reads: its entry in the run's reads manifest (``--reads-manifest``, which the plan
        wrote), or, for a step started without one, ``<sample>_R1.fastq.gz`` and ``_R2`` under
        ``--input-prefix``."""
        manifest = getattr(args, "reads_manifest", "")
        if not manifest:
            r1, r2 = self.reads(getattr(args, "input_prefix", ""))
            return SampleReads((r1,), (r2,))
        entry = json.loads(read_uri(manifest))["samples"].get(self.sample)
        if entry is None:
            raise StepFailed(f"sample {self.sample} is not in the run's reads manifest {manifest}")
        return SampleReads.from_json(entry)

    def stage_reads(self, reads: SampleReads) -> tuple[Path, Path | None]:
        """Local R1 and R2 files (R2 None: single-end). A mate given as several files (lanes, runs) becomes one
        file: each is staged in turn and appended, in order (concatenated gzip members are one valid gzip
        stream, which fastp and bwa read whole), so no merged file is ever written to the lake."""
        mates = [self._joined(f"R{i}", files) for i, files in ((1, reads.r1), (2, reads.r2)) if files]
        return mates[0], (mates[1] if len(mates) > 1 else None)

    def _joined(self, mate: str, files: tuple[str, ...]) -> Path:
        # named <sample>_R1.fastq.gz whatever the sequencer called it: the tools (fastp) name the sample after
        # their input file, and the run's MultiQC report maps that name back to the sample id
        local = f"{self.sample}_{mate}.fastq.gz"
        if len(files) == 1:
            return self.input(files[0], local)
        joined = self.work / "in" / local
        joined.parent.mkdir(parents=True, exist_ok=True)
        with open(joined, "wb") as out:
            for i, uri in enumerate(files):
                part = self.input(uri, f"{mate}-part{i}-{uri.rsplit('/', 1)[-1]}")
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1024 * 1024)
                if part.is_relative_to(self.work):  # a staged copy (never a file on the run's FSx)
                    part.unlink()
        print(f"joined {len(files)} {mate} files in order into {joined} ({joined.stat().st_size} bytes)", flush=True)
        return joined

    def reference(self, reference: str) -> str:
        return layout.reference_prefix(self.lake, reference)

    def complete(self) -> bool:
        """True when metrics.json and every output exist: a few HEAD requests inside the job."""
        return exists_uri(self.uri(layout.METRICS)) and all(exists_uri(self.uri(o)) for o in self.outputs)

    def input(self, uri: str, name: str | None = None) -> Path:
        """A local path of the input ``uri``: on the run's FSx file system when linked there, else a copy."""
        mounted = on_fsx(uri)
        if mounted is not None:
            if not mounted.is_file():
                raise FileNotFoundError(f"input {uri} is not on the run's FSx file system at {mounted}")
            print(f"reading {uri} from FSx at {mounted}", flush=True)
            return mounted
        path = download(uri, self.work / "in" / (name or uri.rstrip("/").rsplit("/", 1)[-1]))
        print(f"staged {uri} -> {path} ({path.stat().st_size} bytes)", flush=True)
        return path

    def out(self, output: str) -> Path:
        if output not in self.outputs:
            raise ValueError(f"{output!r} is not a declared output of step {self.name}")
        return self.out_dir / output

    # --- tools ---------------------------------------------------------------------------------
    def run(self, argv: list[str], *, stdout: Path | None = None) -> None:
        self.pipe([argv], stdout=stdout)

    def pipe(self, commands: list[list[str]], *, stdout: Path | None = None) -> None:
        """Run ``a | b | c`` as processes joined by pipes (no shell). What each tool says goes to the job log:
        its stderr, and its stdout too unless that is piped on or written to ``stdout`` (regenie, for one,
        reports its errors on stdout). If any fails, StepFailed carries its exit code and the last lines it said."""
        logs = [self.work / f"{i}-{Path(argv[0]).name}.log" for i, argv in enumerate(commands)]
        procs: list[subprocess.Popen] = []
        out_fh = open(stdout, "wb") if stdout else None
        try:
            for i, argv in enumerate(commands):
                print("+ " + " ".join(argv), flush=True)
                last = i == len(commands) - 1
                said = open(logs[i], "wb")
                talks_on_stdout = last and out_fh is None  # its stdout is a message, not data
                procs.append(subprocess.Popen(
                    argv,
                    stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                    stdout=said if talks_on_stdout else (out_fh if last else subprocess.PIPE),
                    stderr=subprocess.STDOUT if talks_on_stdout else said,
                    cwd=self.work,
                ))
                said.close()  # the child holds its own copy
                if len(procs) > 1:
                    procs[-2].stdout.close()  # the reader owns the pipe now: a dying reader stops the writer
            codes = [p.wait() for p in procs]
        finally:
            if out_fh:
                out_fh.close()
        for argv, log, code in zip(commands, logs, codes):
            text = log.read_text(errors="replace")
            if text:
                sys.stderr.write(text if text.endswith("\n") else text + "\n")
            if code != 0:
                tail = "\n".join(text.strip().splitlines()[-ERROR_TAIL_LINES:])
                raise StepFailed(f"{Path(argv[0]).name} exited with code {code}:\n{tail}",
                                 code if 0 < code < 256 else 1)
        sys.stderr.flush()

    # --- results -----------------------------------------------------------------------------------
    def stage_rows(self, dataset: str, header: list[str], rows: list[list[Any]], file: str,
                   unit: tuple[str, str] | None = None) -> None:
        """Stage rows of a published dataset for this sample, or for ``unit`` (column, value) such as
        ("phenotype", "height"); the scope is the pipeline version."""
        lines = ["\t".join(header)] + ["\t".join("" if v is None else str(v) for v in row) for row in rows]
        uri = self._staged_uri(dataset, file, unit)
        write_uri(uri, ("\n".join(lines) + "\n").encode())
        self.staged.append(uri)

    def stage_file(self, dataset: str, path: Path, file: str, unit: tuple[str, str] | None = None) -> None:
        """Stage a tab-separated file with a header line as rows of ``dataset`` (for large row sets)."""
        uri = self._staged_uri(dataset, file, unit)
        upload(path, uri)
        self.staged.append(uri)

    def _staged_uri(self, dataset: str, file: str, unit: tuple[str, str] | None) -> str:
        column, value = unit or ("sample_id", self.sample)
        if value is None or self.pipeline_version is None:
            raise ValueError("rows are staged for a sample or a named unit of a pipeline version")
        return staging_uri(dataset, self.pipeline_version) + f"{column}={value}/{file}"

    def stage_qc(self, tool: str, qc: dict[str, Any]) -> None:
        """Stage ``qc`` as this sample's qc_metrics rows of ``tool`` (file <tool>.tsv)."""
        self.stage_rows("qc_metrics", ["tool", "metric", "value"], [[tool, k, v] for k, v in qc.items()],
                        f"{tool}.tsv")

    def judge(self, minimums: list[gates.Minimum], figures: dict[str, Any]) -> gates.Verdict:
        """Hold ``figures`` against ``minimums``: stage the gate's qc_metrics rows (file gate_<step>.tsv) and keep
        the verdict for metrics.json. The caller finishes, then excludes if ``verdict.excluded``."""
        self.verdict = gates.judge(minimums, figures)
        self.stage_rows("qc_metrics", ["tool", "metric", "value"], self.verdict.rows, f"{gates.TOOL}_{self.name}.tsv")
        if self.verdict.flagged:
            print(f"flagged: {self.verdict.flagged}", flush=True)
        return self.verdict

    def exclude(self, reason: str) -> None:
        """End the job as excluded (after ``finish()``: the excluded sample's figures are published)."""
        if not self.finished:
            raise RuntimeError(f"step {self.name} excludes its sample only after finish()")
        raise Excluded(reason)

    def recorded(self) -> dict[str, Any]:
        """The metrics.json document of the complete step."""
        return json.loads(read_uri(self.uri(layout.METRICS)))

    def finish(self, **metrics: Any) -> dict[str, Any]:
        """Upload the outputs, write metrics.json last, and remove the work directory."""
        for output in self.outputs:
            path = self.out_dir / output
            if not path.is_file():
                raise StepFailed(f"step {self.name} did not produce its output {output}")
            upload(path, self.uri(output))
        usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        document = {
            "step": self.name,
            "sample": self.sample,
            "pipeline": os.environ.get("GENOMICS_PIPELINE"),
            "pipeline_version": self.pipeline_version,
            "project": os.environ.get("GENOMICS_PROJECT"),
            "job_id": os.environ.get("AWS_BATCH_JOB_ID"),
            "attempt": os.environ.get("AWS_BATCH_JOB_ATTEMPT"),
            "image": os.environ.get("GENOMICS_IMAGE", "host (local backend)"),
            "tools": self.versions,
            "threads": threads(),
            "runtime_seconds": round(time.time() - self.started, 3),
            "peak_memory_mib": round(max(usage_children, usage_self) / 1024, 1),  # ru_maxrss is KiB on Linux
            "outputs": [self.uri(o) for o in self.outputs],
            "staged": self.staged,
            "metrics": metrics,
        }
        if self.verdict is not None:
            document["gate"] = self.verdict.record()
        write_uri(self.uri(layout.METRICS), json.dumps(document, indent=2).encode())  # last: marks it complete
        print(json.dumps(document), flush=True)
        self.finished = True
        self.cleanup()
        return document

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def sample_step_args(parser: argparse.ArgumentParser, *, reads: bool = False, reference: bool = False,
                     manifest: bool = False) -> None:
    parser.add_argument("--pipeline-version", required=True)
    parser.add_argument("--force", default="false", help="true: redo the step even if its outputs exist")
    if reads:
        parser.add_argument("--input-prefix", default="", help="URI prefix of <sample>_R1/_R2.fastq.gz; "
                                                               "default the lake's raw/<project>/")
    if reads or manifest:
        parser.add_argument("--reads-manifest", default="",
                            help="the run's reads manifest (the plan writes it): the sample's FASTQ files, "
                                 "lanes, single- or paired-end; empty: <sample>_R1/_R2 under --input-prefix")
    if reference:
        parser.add_argument("--reference", required=True)


def gate_args(parser: argparse.ArgumentParser, *minimums: str) -> None:
    """The QC minimums a step's gate takes (``reads``, ``q30_rate``, ``mapping_rate``), defaults as the Params'."""
    helps = {
        "reads": (int, gates.DEFAULT_MIN_READS, "fewer reads exclude the sample"),
        "q30_rate": (float, gates.DEFAULT_MIN_Q30_RATE, "a lower fraction of bases >= Q30 excludes the sample"),
        "mapping_rate": (float, gates.DEFAULT_MIN_MAPPING_RATE, "a lower mapped fraction flags the sample"),
    }
    for name in minimums:
        kind, default, meaning = helps[name]
        parser.add_argument(f"--min-{name.replace('_', '-')}", type=kind, default=default,
                            help=f"{meaning} (default {default})")


def index_step_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True)
    parser.add_argument("--force", default="false", help="true: rebuild the index even if it exists")


def main_of(commands: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any], Step | None]]],
            argv: list[str] | None = None) -> int:
    """Run one subcommand; a StepFailed becomes the job's exit code with the tool's error as the last log lines."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _) in commands.items():
        add_args(sub.add_parser(name))
    args = parser.parse_args(argv)
    problems = argument_problems(args)
    if problems:
        print(f"step {args.command} refused its arguments:\n - " + "\n - ".join(problems), file=sys.stderr, flush=True)
        return 64  # EX_USAGE
    print(f"step {args.command}: job {os.environ.get('AWS_BATCH_JOB_ID')} attempt "
          f"{os.environ.get('AWS_BATCH_JOB_ATTEMPT')}", flush=True)
    try:
        commands[args.command][1](args)
    except Excluded as exc:  # its reason is the log's last line, where the operator reads it
        sys.stderr.flush()
        print(f"{EXCLUDED_LINE}{exc.reason}", flush=True)
        return EXCLUDED_EXIT_CODE
    except StepFailed as exc:
        print(f"step {args.command} failed: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except FileNotFoundError as exc:  # a missing input: say which, without a traceback
        print(f"step {args.command} failed: {exc}", file=sys.stderr, flush=True)
        return 66  # EX_NOINPUT
    return 0


def begin(step: Step, minimums: list[gates.Minimum] | None = None) -> bool:
    """True if the step has work to do; prints why not otherwise. A complete step with QC ``minimums`` is
    judged again from the figures its metrics.json recorded, with this run's thresholds: a sample it excludes
    is excluded again (Excluded), and the gate's rows are staged again."""
    if not step.force and step.complete():
        print(f"step {step.name}: all outputs exist under {step.prefix}; nothing to do (force to redo)", flush=True)
        try:
            if minimums:
                verdict = step.judge(minimums, step.recorded().get("metrics") or {})
                if verdict.excluded:
                    raise Excluded(verdict.excluded)
        finally:
            step.cleanup()
        return False
    return True
