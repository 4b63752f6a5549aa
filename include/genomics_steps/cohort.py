"""Joint calling of a germline cohort: every completed sample of a project and pipeline version, called together
region by region, then concatenated into one VCF (image docker/steps with PIPELINE=germline: bcftools, tabix).

    python -m genomics_steps.cohort call-region --pipeline-version V --reference R --plan URI
    python -m genomics_steps.cohort merge --pipeline-version V --reference R --plan URI

The plan (written by the DAG's ``cohort_plan`` task, ``layout.cohort_plan_uri``) names the samples and the
regions; its key is a hash of both, so a plan is never rewritten with other contents. The region of an array
child is its "sample" (``r0001``...).

- call-region, one child per region: ``bcftools mpileup -b bams.txt -R region.tsv -a AD,DP | bcftools call -m
  -v | bcftools norm -m -any``: all samples' reads are piled up together, so a site called in any sample has a
  genotype (and AD, DP) for every sample. ``-v`` keeps variant sites only (a cohort of hom-ref blocks would be
  most of the genome); indels are kept; multiallelic sites are split into biallelic records (what PLINK and
  regenie read). The BAMs are read from the run's FSx file system when the results prefix is linked there (AWS),
  else from the lake's own files (local backend), else downloaded.
- merge, once: ``bcftools concat`` of the regions' VCFs in region order (they are disjoint and in reference
  order, so the result is sorted), ``bcftools +fill-tags`` for AC, AN and AF, ``bcftools index -t``; stages the
  site rows of ``cohort_variants``, then writes ``manifest.json`` last (samples, plan key, counts), and then
  deletes the plan's region parts: the cohort VCF holds all of them, and a rebuild (another plan) would
  otherwise leave a cohort's worth of parts behind each time. A merge whose manifest already has the plan's
  key has nothing to do (and needs no part).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from genomics_steps import layout
from genomics_steps.germline import PIPELINE
from genomics_steps.names import SAMPLE_ID
from genomics_steps.runtime import (current_sample, delete_uri, download, exists_uri, list_uri, on_fsx, read_uri,
                                    write_uri)
from genomics_steps.step import Step, StepFailed, main_of, sample_step_args, threads, truthy

MANIFEST = "manifest.json"
SITE_COLUMNS = ["chrom", "pos", "ref", "alt", "ac", "an", "af", "qual"]


def fai_contigs(text: str) -> list[tuple[str, int]]:
    """(name, length) of every contig of a samtools .fai index, in the reference's order."""
    contigs = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].isdigit() or not fields[0]:
            raise ValueError(f"line {n} of the .fai is not '<contig>\\t<length>...': {line[:200]!r}")
        contigs.append((fields[0], int(fields[1])))
    if not contigs:
        raise ValueError("the .fai lists no contig")
    return contigs


def plan_regions(contigs: list[tuple[str, int]], count: int) -> list[dict]:
    """Cut the genome into ``count`` regions of (nearly) equal length in reference order (fewer if it has fewer
    bases). A region is a list of 1-based inclusive intervals [contig, start, end]: it may span the end of one
    contig and the start of the next, and small contigs share a region. Region ``i`` covers the genome offsets
    [i * total / count, (i + 1) * total / count)."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"region count must be a whole number of at least 1, got {count!r}")
    total = sum(length for _, length in contigs)
    count = min(count, total)
    bounds = [total * i // count for i in range(count + 1)]
    regions: list[dict] = []
    offset = 0  # genome offset of the current contig's first base
    contig_at = iter(contigs)
    name, length = next(contig_at)
    for i in range(count):
        begin, end = bounds[i], bounds[i + 1]  # [begin, end) in genome offsets
        intervals = []
        while begin < end:
            while begin >= offset + length:
                offset += length
                name, length = next(contig_at)
            stop = min(end, offset + length)
            intervals.append([name, begin - offset + 1, stop - offset])
            begin = stop
        regions.append({"id": f"r{i + 1:04d}", "intervals": intervals,
                        "bases": bounds[i + 1] - bounds[i]})
    return regions


def plan_key(samples: list[str], regions: list[dict], reference: str) -> str:
    """What a cohort is built from, as a short hash: the same samples, regions and reference give the same key."""
    import hashlib

    text = json.dumps({"samples": sorted(samples), "regions": regions, "reference": reference}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_document(samples: list[str], contigs: list[tuple[str, int]], count: int, reference: str) -> dict:
    """The plan of a cohort: its samples (sorted), its regions and the key naming both."""
    regions = plan_regions(contigs, count)
    ordered = sorted(samples)
    return {"key": plan_key(ordered, regions, reference), "reference": reference, "samples": ordered,
            "regions": regions}


def _plan(args: argparse.Namespace) -> dict:
    plan = json.loads(read_uri(args.plan))
    if plan.get("reference") != args.reference:
        raise StepFailed(f"the plan {args.plan} is for reference {plan.get('reference')!r}, not {args.reference!r}", 65)
    bad = [s for s in plan.get("samples", []) if not SAMPLE_ID.ok(s)]
    if bad or not plan.get("samples"):
        raise StepFailed(f"the plan {args.plan} names no samples, or invalid ones: {bad[:5]!r}", 65)
    return plan


def _reference(step: Step, reference: str) -> str:
    base = layout.index_prefix(step.lake, reference, "bwa")
    for name in ("genome.fa", "genome.fa.fai"):
        step.input(base + name, f"ref/{name}")
    return str(step.work / "in" / "ref" / "genome.fa")


def _bam(step: Step, uri: str, sample: str) -> Path:
    """Where this job reads a sample's BAM (its .bai beside it): on the run's file system, in the local lake,
    or downloaded."""
    mounted = on_fsx(uri)
    if mounted is not None:
        return mounted
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    local = download(uri, step.work / "in" / "bams" / sample / "sample.bam")
    download(uri + ".bai", step.work / "in" / "bams" / sample / "sample.bam.bai")
    return local


def region_prefix(lake: str, version: str, project: str, key: str, region: str) -> str:
    return f"{layout.cohort_prefix(lake, version, project)}parts/{key}/{region}/"


def call_region(args) -> None:
    region_id = current_sample()
    plan = _plan(args)
    region = next((r for r in plan["regions"] if r["id"] == region_id), None)
    if region is None:
        raise StepFailed(f"region {region_id} is not in the plan {args.plan}", 65)
    lake, project = os.environ["GENOMICS_LAKE_URI"], os.environ["GENOMICS_PROJECT"]
    step = Step("call_region", output_prefix=region_prefix(lake, args.pipeline_version, project, plan["key"],
                                                          region_id),
                outputs=["region.vcf.gz"], tools=["bcftools"], force=truthy(args.force), pipeline=PIPELINE,
                pipeline_version=args.pipeline_version)
    if not step.force and step.complete():
        print(f"step call_region: region {region_id} of plan {plan['key']} is done; nothing to do", flush=True)
        step.cleanup()
        return
    ref = _reference(step, args.reference)
    bams = [_bam(step, layout.step_prefix(lake, PIPELINE, args.pipeline_version, project, s, "markdup")
                 + "sample.bam", s) for s in plan["samples"]]
    bam_list = step.work / "bams.txt"
    bam_list.write_text("".join(f"{b}\n" for b in bams))
    regions_file = step.work / "region.tsv"
    regions_file.write_text("".join(f"{c}\t{start}\t{end}\n" for c, start, end in region["intervals"]))
    vcf = step.out("region.vcf.gz")
    step.pipe([["bcftools", "mpileup", "-f", ref, "-b", str(bam_list), "-R", str(regions_file), "-a", "AD,DP",
                "-Ou"],
               ["bcftools", "call", "-m", "-v", "-Ou"],
               ["bcftools", "norm", "-m", "-any", "-f", ref, "-Oz", "-o", str(vcf)]])
    records = sum(1 for line in _body(step, vcf))
    step.finish(region=region_id, intervals=len(region["intervals"]), bases=region["bases"],
                samples=len(plan["samples"]), records=records)


def _body(step: Step, vcf: Path) -> list[str]:
    out = step.work / "body.txt"
    step.run(["bcftools", "view", "-H", str(vcf)], stdout=out)
    return [line for line in out.read_text().splitlines() if line]


def merge(args) -> None:
    plan = _plan(args)
    lake, project = os.environ["GENOMICS_LAKE_URI"], os.environ["GENOMICS_PROJECT"]
    prefix = layout.cohort_prefix(lake, args.pipeline_version, project)
    if prefix + "cohort.vcf.gz" != layout.cohort_vcf(lake, args.pipeline_version, project):
        raise StepFailed("the cohort VCF is not where layout.cohort_vcf says")
    step = Step("cohort_merge", output_prefix=prefix, outputs=["cohort.vcf.gz", "cohort.vcf.gz.tbi"],
                tools=["bcftools"], force=truthy(args.force), pipeline=PIPELINE,
                pipeline_version=args.pipeline_version)
    if not step.force and exists_uri(prefix + MANIFEST) and step.complete():
        built = json.loads(read_uri(prefix + MANIFEST))
        if built.get("key") == plan["key"]:
            print(f"step cohort_merge: the cohort of {len(plan['samples'])} sample(s) (plan {plan['key']}) is "
                  f"built; nothing to do", flush=True)
            step.cleanup()
            return
    parts = []
    for region in plan["regions"]:
        part = region_prefix(lake, args.pipeline_version, project, plan["key"], region["id"])
        if not exists_uri(part + layout.METRICS):
            raise StepFailed(f"region {region['id']} has no finished calls under {part}", 66)
        parts.append(step.input(part + "region.vcf.gz", f"parts/{region['id']}.vcf.gz"))
    vcf = step.out("cohort.vcf.gz")
    step.pipe([["bcftools", "concat", "--no-version", "-Ou", *map(str, parts)],
               ["bcftools", "+fill-tags", "--no-version", "-Oz", "-o", str(vcf), "--", "-t", "AC,AN,AF"]])
    step.run(["bcftools", "index", "-t", "-f", str(vcf)])
    sites = step.work / "sites.tsv"
    step.run(["bcftools", "query", "-f", r"%CHROM\t%POS\t%REF\t%ALT\t%INFO/AC\t%INFO/AN\t%INFO/AF\t%QUAL\n",
              str(vcf)], stdout=sites)
    rows = [line for line in sites.read_text().splitlines() if line]
    staged = step.work / "cohort_variants.tsv"
    staged.write_text("\t".join(SITE_COLUMNS) + "\n" + "".join(f"{row}\n" for row in rows))
    step.stage_file("cohort_variants", staged, "sites.tsv", unit=("cohort", args.pipeline_version))
    document = step.finish(samples=len(plan["samples"]), regions=len(plan["regions"]), sites=len(rows))
    manifest = {"key": plan["key"], "reference": plan["reference"], "samples": plan["samples"],
                "regions": len(plan["regions"]), "sites": len(rows), "vcf": step.uri("cohort.vcf.gz"),
                "index": step.uri("cohort.vcf.gz.tbi"), "job_id": document["job_id"]}
    write_uri(prefix + MANIFEST, json.dumps(manifest, indent=1).encode())  # last: the cohort is this plan's
    parts_prefix = f"{prefix}parts/{plan['key']}/"
    for path in list_uri(parts_prefix):  # only this plan's: another run may be calling another plan's regions
        delete_uri(parts_prefix + path)
    print(f"cohort of {len(plan['samples'])} sample(s): {len(rows)} site(s) in {step.uri('cohort.vcf.gz')}",
          flush=True)


def cohort_args(parser: argparse.ArgumentParser) -> None:
    sample_step_args(parser, reference=True)
    parser.add_argument("--plan", required=True, help="URI of the cohort plan (samples, regions, key)")


COMMANDS = {"call-region": (cohort_args, call_region), "merge": (cohort_args, merge)}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
