"""RNA-seq steps (image docker/steps with PIPELINE=rnaseq: fastp, salmon).

    python -m genomics_steps.rnaseq salmon-index --reference R [--force true]
    python -m genomics_steps.rnaseq fastp --pipeline-version V [--reads-manifest URI | --input-prefix URI]
        [--force true] [--min-reads N] [--min-q30-rate F]
    python -m genomics_steps.rnaseq salmon-quant --pipeline-version V --reference R [--reads-manifest URI]
        [--force true] [--min-mapping-rate F]
    python -m genomics_steps.rnaseq merge --pipeline-version V --reference R [--force true]

Project, sample and lake come from the job's environment (GENOMICS_*), as on Batch. The reads manifest says
whether the sample is single- or paired-end, which files (lanes) it has and, for salmon, its strandedness
(read_inputs.SALMON_LIBRARY_TYPES; none given: salmon infers it, ``-l A``). A single-end sample is trimmed
as such and quantified with ``salmon quant -r``.

QC gates (gates.py): after fastp, fewer reads passing its filters than --min-reads, or a Q30 rate of the
reads as sequenced below --min-q30-rate, excludes the sample; after salmon, a mapping rate below
--min-mapping-rate flags it (it is still published).

``merge`` runs once per pipeline run, after the per-sample steps: it writes the project's gene x sample
matrices of every sample complete for the version (matrices.py), or nothing when the samples and their
inputs are those its manifest already records.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
from datetime import datetime, timezone

from genomics_steps import gates, layout, matrices
from genomics_steps.runtime import delete_uri, exists_uri, list_uri, read_uri, upload, write_uri
from genomics_steps.step import (Step, StepFailed, begin, gate_args, index_step_args, main_of, sample_step_args,
                                 threads, truthy)

PIPELINE = "rnaseq"
STEPS = ["fastp", "salmon_quant"]  # a sample is done when both are complete


def fastp_figures(report: dict) -> dict:
    """The QC figures of a fastp JSON report: reads before and after its filters, and the kept reads' Q30
    rate and GC content (q30_rate_raw: the Q30 rate of the reads as sequenced)."""
    before, after = report["summary"]["before_filtering"], report["summary"]["after_filtering"]
    return {
        "reads_before": before["total_reads"],
        "reads_after": after["total_reads"],
        "q30_rate": after["q30_rate"],
        "q30_rate_raw": before["q30_rate"],
        "gc_content": after["gc_content"],
        "duplication_rate": report.get("duplication", {}).get("rate", 0.0),
        "adapter_trimmed_reads": report.get("adapter_cutting", {}).get("adapter_trimmed_reads", 0),
    }


def fastp_gate(args) -> list[gates.Minimum]:
    return [
        gates.Minimum("reads", "reads_after", "the number of reads passing fastp's filters", args.min_reads,
                      gates.EXCLUDE),
        # judged on the reads as sequenced: after fastp's filter the worst reads are gone, flattering the rate
        gates.Minimum("q30_rate", "q30_rate_raw", "the Q30 rate of the reads as sequenced", args.min_q30_rate,
                      gates.EXCLUDE),
    ]


def salmon_gate(args) -> list[gates.Minimum]:
    return [gates.Minimum("mapping_rate", "percent_mapped", "salmon's mapping rate", args.min_mapping_rate,
                          gates.FLAG, scale=0.01)]


def salmon_index(args) -> None:
    step = Step.for_index("salmon_index", args, "salmon", ["index.tar.gz"], ["salmon"])
    if not begin(step):
        return
    fasta = step.input(step.reference(args.reference) + "transcriptome.fa")
    index = step.work / "index"
    step.run(["salmon", "index", "-t", str(fasta), "-i", str(index), "-k", "25", "-p", str(threads())])
    with tarfile.open(step.out("index.tar.gz"), "w:gz") as tar:
        tar.add(index, arcname="index")
    step.finish(kmer=25)


def fastp(args) -> None:
    step = Step.for_sample(PIPELINE, "fastp", args, ["fastp.json", "fastp.html"], ["fastp"])
    reads = step.sample_reads(args)
    step.outputs[:0] = trimmed(reads.paired)
    if not begin(step, fastp_gate(args)):
        return
    r1, r2 = step.stage_reads(reads)
    argv = ["fastp", "-i", str(r1), "-o", str(step.out("trimmed_R1.fastq.gz"))]
    if r2 is not None:
        argv += ["-I", str(r2), "-O", str(step.out("trimmed_R2.fastq.gz")), "--detect_adapter_for_pe"]
    step.run([*argv, "-j", str(step.out("fastp.json")), "-h", str(step.out("fastp.html")), "-w", str(threads())])
    qc = fastp_figures(json.loads(step.out("fastp.json").read_text()))
    if not qc["reads_before"]:  # fastp accepts empty or unparsable FASTQ and reads nothing: stop here
        raise StepFailed(f"fastp kept no reads (it read 0): are {[*reads.r1, *(reads.r2 or ())]} FASTQ?")
    step.stage_qc("fastp", qc)
    verdict = step.judge(fastp_gate(args), qc)
    step.finish(**qc)
    if verdict.excluded:
        step.exclude(verdict.excluded)


def trimmed(paired: bool) -> list[str]:
    """fastp's trimmed reads of a paired- or single-end sample."""
    return ["trimmed_R1.fastq.gz", "trimmed_R2.fastq.gz"] if paired else ["trimmed_R1.fastq.gz"]


def salmon_quant(args) -> None:
    outputs = ["quant.sf", "meta_info.json", "lib_format_counts.json"]
    step = Step.for_sample(PIPELINE, "salmon_quant", args, outputs, ["salmon"])
    if not begin(step, salmon_gate(args)):
        return
    library = step.sample_reads(args)
    fastp_dir = step.sibling("fastp")
    mates = [step.input(fastp_dir + name) for name in trimmed(library.paired)]
    reads = ["-1", str(mates[0]), "-2", str(mates[1])] if library.paired else ["-r", str(mates[0])]
    with tarfile.open(step.input(layout.index_prefix(step.lake, args.reference, "salmon") + "index.tar.gz")) as tar:
        # the "data" filter refuses absolute paths and links out of the tree (Python >= 3.11.4)
        tar.extractall(step.work, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    tx2gene_path = step.input(step.reference(args.reference) + "tx2gene.tsv")
    quant = step.work / "quant"
    step.run(["salmon", "quant", "-i", str(step.work / "index"), "-l", library.salmon_library_type(), *reads,
              "-p", str(threads()), "--validateMappings", "-o", str(quant)])
    (quant / "quant.sf").replace(step.out("quant.sf"))
    (quant / "aux_info" / "meta_info.json").replace(step.out("meta_info.json"))
    (quant / "lib_format_counts.json").replace(step.out("lib_format_counts.json"))

    tx2gene = dict(line.split("\t")[:2] for line in tx2gene_path.read_text().splitlines() if line)
    rows = []
    for line in step.out("quant.sf").read_text().splitlines()[1:]:
        name, length, effective, tpm, reads = line.split("\t")
        rows.append([name, tx2gene.get(name, name), length, effective, tpm, reads])
    step.stage_rows("transcript_quant", ["transcript_id", "gene_id", "length", "effective_length", "tpm",
                                         "num_reads"], rows, "salmon.tsv")
    meta = json.loads(step.out("meta_info.json").read_text())
    qc = {"num_processed": meta["num_processed"], "num_mapped": meta["num_mapped"],
          "percent_mapped": meta["percent_mapped"]}
    step.stage_qc("salmon", qc)
    step.judge(salmon_gate(args), qc)  # a low mapping rate flags the sample: the step still succeeds
    step.finish(**qc, library_type=meta.get("library_types"))


def merge(args) -> None:
    """The project's matrices for this version, over every complete sample (one listing of the results)."""
    lake, project, version = os.environ["GENOMICS_LAKE_URI"], os.environ["GENOMICS_PROJECT"], args.pipeline_version
    listing = list_uri(layout.results_prefix(lake, PIPELINE, version, project))
    samples = sorted(layout.completed_samples(list(listing), STEPS))
    if not samples:
        raise StepFailed(f"no sample of project {project} is complete for rnaseq {version}: no matrix to build")
    tx2gene_text = read_uri(layout.reference_prefix(lake, args.reference) + "tx2gene.tsv")
    digest = matrices.inputs_digest(samples, listing, tx2gene_text)
    step = Step("merge", output_prefix=layout.matrices_prefix(lake, version, project), outputs=matrices.files(),
                tools=[], force=truthy(args.force), pipeline=PIPELINE, pipeline_version=version)
    manifest_uri = step.uri(matrices.MANIFEST)
    manifest = matrices.manifest_of(read_uri(manifest_uri) if exists_uri(manifest_uri) else None)
    if (not step.force and manifest and manifest.get("inputs") == digest
            and all(exists_uri(step.uri(f)) for f in step.outputs)):
        print(f"merge: the matrices under {step.prefix} hold these {len(samples)} samples and inputs; "
              "nothing to rewrite", flush=True)
    else:
        delete_uri(manifest_uri)  # while the files are rewritten, no manifest vouches for them
        tx2gene = matrices.parse_tx2gene(tx2gene_text.decode())
        quant = lambda s: read_uri(layout.step_prefix(lake, PIPELINE, version, project, s, "salmon_quant")
                                   + "quant.sf").decode()
        try:
            summary = matrices.summarize(samples, quant, tx2gene, step.work)
        except ValueError as exc:
            raise StepFailed(str(exc)) from None
        for name, path in matrices.write(summary, step.out_dir).items():
            upload(path, step.uri(name))
        manifest = matrices.manifest_document(
            samples, digest, {f: step.uri(f) for f in step.outputs},
            datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), len(summary.genes))
        write_uri(manifest_uri, json.dumps(manifest, indent=2).encode())  # last: vouches for the files
        print(f"merge: wrote {len(summary.genes)} genes x {len(samples)} samples under {step.prefix}", flush=True)
    step.stage_rows("rnaseq_matrices", ["kind", "format", "uri", "n_samples", "samples", "inputs", "built_at"],
                    matrices.published_rows(manifest), "matrices.tsv", unit=("pipeline_version", version))
    step.cleanup()


def _merge_args(parser) -> None:
    index_step_args(parser)
    parser.add_argument("--pipeline-version", required=True)


COMMANDS = {
    "salmon-index": (index_step_args, salmon_index),
    "fastp": (lambda p: (sample_step_args(p, reads=True), gate_args(p, "reads", "q30_rate")), fastp),
    "salmon-quant": (lambda p: (sample_step_args(p, reference=True, manifest=True), gate_args(p, "mapping_rate")),
                     salmon_quant),
    "merge": (_merge_args, merge),
}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
