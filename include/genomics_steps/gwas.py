"""GWAS steps (image docker/gwas: regenie, plink2), on the run's FSx for Lustre file system.

    python -m genomics_steps.gwas step1 --engine E --genotypes URI --phenotypes URI --covariates URI|none
                                        --traits T1,T2 --trait-type quantitative|binary --block-size B
                                        --variants-per-job N --pipeline-version V
    python -m genomics_steps.gwas step2 (same arguments; the chunk is this job's "sample")
    python -m genomics_steps.gwas merge (same arguments)

- step1, once: with genotypes given as a VCF (``.vcf.gz``) or BCF (``.bcf``, e.g. the germline cohort),
  first converts them with ``plink2 --make-bed`` into ``<mount>/work/genotypes/`` on the file system, which
  step 2 reads too (biallelic sites only, ``--max-alleles 2``; FID and IID both the VCF's sample name, so the
  phenotype and covariate files name samples ``<sample> <sample>``; missing and half-missing calls are missing
  genotypes; variants without an ID get ``chrom:pos:ref:alt``). Then it splits the variants of the .bim into
  step-2 chunks (whole chromosome ranges of at most N variants) and, with regenie, fits the whole-genome
  ridge model (``regenie --step 1``) whose per-chromosome predictions every step-2 job reads from the shared
  file system; with ``--step1-predictions`` it points step 2 at an earlier fit's LOCO files instead of
  fitting. plink2 has no such model: its step 1 only plans the chunks and counts the samples per trait.
- step2, per chunk (an array job): association tests of the chunk's variants against every trait
  (``regenie --step 2 --range`` or ``plink2 --glm --chr --from-bp --to-bp``), normalised to one table.
- merge, once: concatenates the chunks per trait (``associations/<trait>.tsv.gz``), writes the top hits and
  stages the rows of ``gwas_associations`` (one unit per trait).

Inputs are read through the file system (the S3 prefixes the operator linked to it, env GENOMICS_FSX);
outputs go to ``<mount>/output/`` (exported to ``results/regenie_gwas/<version>/project=<p>/`` by the DAG),
and each step's metrics.json there marks it complete, so a retried job on the same file system skips.
Binary traits are coded 0 = control, 1 = case (regenie's convention; plink2 is told so with --1).
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import os
import shutil
import sys
from pathlib import Path

from genomics_steps import layout
from genomics_steps.names import GENOTYPES_VCF
from genomics_steps.runtime import current_sample, fsx, on_fsx, write_uri
from genomics_steps.step import Step, StepFailed, begin, main_of, threads

PIPELINE = "regenie_gwas"
ENGINES = ("regenie", "plink2")
COLUMNS = ["chrom", "pos", "variant_id", "allele0", "allele1", "a1freq", "n", "beta", "se", "log10p"]
TOP_HITS = 10


def step_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--genotypes", required=True,
                        help="URI of a PLINK 1 fileset without extension, or of a .vcf.gz or .bcf")
    parser.add_argument("--phenotypes", required=True)
    parser.add_argument("--covariates", default="none", help="URI, or none")
    parser.add_argument("--traits", required=True, help="comma-separated phenotype columns")
    parser.add_argument("--trait-type", choices=("quantitative", "binary"), default="quantitative")
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--variants-per-job", type=int, default=200_000)
    parser.add_argument("--pipeline-version", required=True)
    parser.add_argument("--step1-predictions", default="",
                        help="URI of a regenie _pred.list with its LOCO files beside it: step 1 uses them "
                             "instead of fitting the model")


def output_dir() -> Path:
    """The run's output directory on the FSx file system; a job without one cannot run a GWAS step."""
    mounted = fsx()
    if not mounted:
        raise StepFailed("GENOMICS_FSX is not set: GWAS steps run on the run's FSx file system", 64)
    out = Path(mounted["output"])
    if not out.is_dir():
        # 69 is retried by the default retry strategy (batch_model.HOST_NOT_READY_EXIT_CODE): the host's mounter
        # (infra/ launch template) mounts a new file system within seconds, and a new attempt's container sees it.
        raise StepFailed(f"FSx file system {mounted['file_system_id']} is not mounted on this host yet "
                         f"({out} does not exist): the compute environment's launch template mounts it", 69)
    return out


def gwas_step(name: str, args: argparse.Namespace, outputs: list[str], sub: str = "") -> Step:
    prefix = output_dir() / name / sub if sub else output_dir() / name
    converts = name == "step1" and GENOTYPES_VCF.ok(args.genotypes) and args.engine != "plink2"
    return Step(name, output_prefix=prefix.as_uri() + "/", outputs=outputs,
                tools=[args.engine, *(["plink2"] if converts else [])],
                pipeline=PIPELINE, pipeline_version=args.pipeline_version)


def chunk_plan(bim: Path, variants_per_job: int) -> list[dict]:
    """Chunks of at most ``variants_per_job`` variants, each within one chromosome, as position ranges that
    never split variants sharing a position (a range selects by position)."""
    positions: dict[str, list[int]] = {}
    with open(bim) as fh:
        for n, line in enumerate(fh, 1):
            fields = line.split()
            if len(fields) != 6:
                raise StepFailed(f"{bim.name} line {n}: expected 6 columns, got {len(fields)}", 65)
            positions.setdefault(fields[0], []).append(int(fields[3]))
    chunks = []
    for chrom, pos in positions.items():
        pos.sort()
        start = 0
        while start < len(pos):
            end = min(start + variants_per_job, len(pos))
            while end < len(pos) and pos[end] == pos[end - 1]:
                end += 1
            safe = "".join(c for c in chrom if c.isalnum()) or "x"
            chunks.append({"id": f"c{len(chunks) + 1:05d}-chr{safe}", "chrom": chrom, "start": pos[start],
                           "end": pos[end - 1], "variants": end - start})
            start = end
    if not chunks:
        raise StepFailed(f"{bim.name} lists no variants", 65)
    return chunks


def converted_genotypes() -> Path:
    """Where step 1 leaves a VCF's genotypes as a PLINK 1 fileset (prefix): on the run's file system beside, not
    inside, the exported output, so every step-2 job reads this one conversion and S3 never gets a copy."""
    return Path(fsx()["mount"]) / "work" / "genotypes" / "cohort"


def convert_vcf(step: Step, uri: str) -> dict:
    """``uri`` (bgzipped VCF or BCF) as a PLINK 1 fileset at ``converted_genotypes()``. plink2 writes into a
    folder of its own that is renamed into place, so a reader never finds half a fileset."""
    source = step.input(uri)
    final = converted_genotypes().parent
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    memory = int(int(os.environ.get("GENOMICS_MEMORY_MIB", "2048")) * 0.75)
    step.run(["plink2", "--bcf" if uri.endswith(".bcf") else "--vcf", str(source),
              "--double-id",  # FID = IID = the VCF's sample name (no splitting at '_')
              "--allow-extra-chr",  # contigs that are not human chromosome names
              "--max-alleles", "2", "--vcf-half-call", "missing",
              "--set-missing-var-ids", "@:#:$r:$a", "--new-id-max-allele-len", "60", "truncate",
              "--make-bed", "--threads", str(threads()), "--memory", str(max(memory, 256)),
              "--out", str(partial / "cohort")])
    shutil.rmtree(final, ignore_errors=True)  # an earlier attempt's conversion on the same file system
    os.replace(partial, final)
    with open(final / "cohort.fam") as fam:
        samples = sum(1 for _ in fam)
    with open(final / "cohort.bim") as bim:
        variants = sum(1 for _ in bim)
    print(f"genotypes converted from {uri}: {variants} biallelic variants of {samples} samples", flush=True)
    return {"from": uri, "samples": samples, "variants": variants}


def inputs(step: Step, args: argparse.Namespace) -> dict[str, Path]:
    if GENOTYPES_VCF.ok(args.genotypes):  # converted by step 1 (which converts before calling this)
        prefix = converted_genotypes()
        files = {ext: prefix.with_suffix(f".{ext}") for ext in ("bed", "bim", "fam")}
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent:
            raise StepFailed(f"step 1's conversion of {args.genotypes} is not on the file system: {absent}", 66)
    else:
        files = {ext: step.input(f"{args.genotypes}.{ext}") for ext in ("bed", "bim", "fam")}
    files["pheno"] = step.input(args.phenotypes)
    if args.covariates != "none":
        files["covar"] = step.input(args.covariates)
    return files


def _trait_counts(pheno: Path, traits: list[str]) -> dict[str, int]:
    with open(pheno) as fh:
        header = fh.readline().split()
        missing = [t for t in traits if t not in header]
        if missing:
            raise StepFailed(f"{pheno.name} has no column(s) {missing}; it has {header[2:]}", 65)
        cols = [header.index(t) for t in traits]
        counts = dict.fromkeys(traits, 0)
        for line in fh:
            fields = line.split()
            for t, c in zip(traits, cols):
                counts[t] += fields[c] not in ("NA", "nan", "-9", "")
    return counts


def step1(args) -> None:
    step = gwas_step("step1", args, ["chunks.json"])
    if not begin(step):
        return
    traits = args.traits.split(",")
    converted = convert_vcf(step, args.genotypes) if GENOTYPES_VCF.ok(args.genotypes) else None
    files = inputs(step, args)
    counts = _trait_counts(files["pheno"], traits)
    chunks = chunk_plan(files["bim"], args.variants_per_job)
    fit = output_dir() / "step1" / "fit"  # regenie writes fit.log, fit_pred.list, fit_<n>.loco; step 2 reads them
    fit.parent.mkdir(parents=True, exist_ok=True)  # regenie creates no folder: it stops at writing its log
    if args.engine == "regenie" and args.step1_predictions:
        reuse_predictions(step, args.step1_predictions, traits, Path(f"{fit}_pred.list"))
    elif args.engine == "regenie":
        argv = ["regenie", "--step", "1", "--bed", str(files["bed"].with_suffix("")), "--phenoFile",
                str(files["pheno"]), "--phenoColList", args.traits, "--bsize", str(args.block_size), "--lowmem",
                "--lowmem-prefix", str(step.work / "tmp"), "--threads", str(threads()), "--out", str(fit)]
        if "covar" in files:
            argv += ["--covarFile", str(files["covar"])]
        if args.trait_type == "binary":
            argv.append("--bt")
        step.run(argv)
    plan = {"engine": args.engine, "traits": traits, "chunks": chunks}
    step.out("chunks.json").write_text(json.dumps(plan, indent=1))
    mounted = fsx()
    write_uri(layout.chunk_plan_uri(step.lake, os.environ.get("GENOMICS_DAG_ID", PIPELINE),
                                    os.environ["GENOMICS_RUN_ID"], mounted["file_system_id"]),
              json.dumps(plan).encode())  # for Airflow, which cannot read the file system
    step.finish(chunks=len(chunks), variants=sum(c["variants"] for c in chunks), samples_per_trait=counts,
                step1_predictions=args.step1_predictions or None, converted_genotypes=converted)


def reuse_predictions(step: Step, uri: str, traits: list[str], pred_list: Path) -> None:
    """Write ``pred_list`` naming the LOCO files of an earlier step 1 (``uri``, a _pred.list whose LOCO files are
    beside it) as this file system sees them: the paths inside ``uri`` are where that step 1 wrote them."""
    def linked(file_uri: str) -> Path:  # every step-2 job reads it: it must be on the file system, not a copy
        path = on_fsx(file_uri)
        if path is None or not path.is_file():
            raise StepFailed(f"{file_uri} is not on the run's file system (its folder is linked by the plan)", 66)
        return path

    folder = uri.rsplit("/", 1)[0] + "/"
    lines = {}
    for line in linked(uri).read_text().splitlines():
        fields = line.split()
        if fields:
            lines[fields[0]] = f"{fields[0]} {linked(folder + fields[-1].rsplit('/', 1)[-1])}"
    if sorted(lines) != sorted(traits):
        raise StepFailed(f"{uri} has predictions for {sorted(lines)}, the run tests {sorted(traits)}", 65)
    pred_list.write_text("".join(lines[t] + "\n" for t in traits))
    print(f"step 1 model reused from {uri}: {len(traits)} trait(s), no regenie --step 1", flush=True)


def _float(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number else None  # NaN


def _normalise_plink2(path: Path):
    with open(path) as fh:
        header = fh.readline().lstrip("#").split()
        col = {name: i for i, name in enumerate(header)}
        for line in fh:
            f = line.split()
            log10p = _float(f[col["LOG10_P"]])
            if log10p is None:  # plink2 writes NA where the regression failed
                continue
            yield [f[col["CHROM"]], f[col["POS"]], f[col["ID"]], f[col["AX"]], f[col["A1"]], f[col["A1_FREQ"]],
                   f[col["OBS_CT"]], f[col["BETA"]], f[col["SE"]], log10p]


def _normalise_regenie(path: Path):
    with open(path) as fh:
        header = fh.readline().split()
        col = {name: i for i, name in enumerate(header)}
        for line in fh:
            f = line.split()
            log10p = _float(f[col["LOG10P"]])
            if f[col["TEST"]] != "ADD" or log10p is None:
                continue
            yield [f[col["CHROM"]], f[col["GENPOS"]], f[col["ID"]], f[col["ALLELE0"]], f[col["ALLELE1"]],
                   f[col["A1FREQ"]], f[col["N"]], f[col["BETA"]], f[col["SE"]], log10p]


def step2(args) -> None:
    chunk_id = current_sample()
    traits = args.traits.split(",")
    step = gwas_step("step2", args, [f"{t}.tsv" for t in traits], sub=chunk_id)
    if not begin(step):
        return
    plan = json.loads((output_dir() / "step1" / "chunks.json").read_text())
    chunk = next((c for c in plan["chunks"] if c["id"] == chunk_id), None)
    if chunk is None:
        raise StepFailed(f"chunk {chunk_id} is not in step 1's chunk plan", 65)
    files = inputs(step, args)
    out = step.work / "assoc"
    if args.engine == "regenie":
        argv = ["regenie", "--step", "2", "--bed", str(files["bed"].with_suffix("")), "--phenoFile",
                str(files["pheno"]), "--phenoColList", args.traits, "--bsize", str(args.block_size),
                "--pred", str(output_dir() / "step1" / "fit_pred.list"),
                "--range", f"{chunk['chrom']}:{chunk['start']}-{chunk['end']}", "--threads", str(threads()),
                "--out", str(out)]
        if "covar" in files:
            argv += ["--covarFile", str(files["covar"])]
        if args.trait_type == "binary":
            argv += ["--bt", "--firth", "--approx"]
        step.run(argv)
        results = {t: _normalise_regenie(Path(f"{out}_{t}.regenie")) for t in traits}
    else:
        memory = int(int(os.environ.get("GENOMICS_MEMORY_MIB", "2048")) * 0.75)  # plink2 takes half the host
        argv = ["plink2", "--bfile", str(files["bed"].with_suffix("")), "--pheno", str(files["pheno"]),
                "--pheno-name", args.traits, "--chr", chunk["chrom"], "--from-bp", str(chunk["start"]),
                "--to-bp", str(chunk["end"]), "--glm", "hide-covar", "log10",
                *([] if "covar" in files else ["allow-no-covars"]),
                "cols=chrom,pos,ref,alt,ax,a1freq,nobs,beta,se,tz,p", "--threads", str(threads()),
                "--memory", str(max(memory, 256)), "--out", str(out)]
        if "covar" in files:
            argv += ["--covar", str(files["covar"]), "--covar-variance-standardize"]
        if args.trait_type == "binary":
            argv.append("--1")
        step.run(argv)
        suffix = "glm.logistic.hybrid" if args.trait_type == "binary" else "glm.linear"
        results = {t: _normalise_plink2(Path(f"{out}.{t}.{suffix}")) for t in traits}
    tested = {}
    for trait, rows in results.items():
        with open(step.out(f"{trait}.tsv"), "w") as fh:
            fh.write("\t".join(COLUMNS) + "\n")
            n = 0
            for row in rows:
                fh.write("\t".join(map(str, row)) + "\n")
                n += 1
        tested[trait] = n
    step.finish(chunk=chunk, variants_tested=tested)


def merge(args) -> None:
    traits = args.traits.split(",")
    step = gwas_step("associations", args, [f"{t}.tsv.gz" for t in traits] + ["top_hits.json"])
    if not begin(step):
        return
    plan = json.loads((output_dir() / "step1" / "chunks.json").read_text())
    chunk_dirs = [output_dir() / "step2" / c["id"] for c in plan["chunks"]]
    unfinished = [d.name for d in chunk_dirs if not (d / layout.METRICS).is_file()]
    if unfinished:
        raise StepFailed(f"{len(unfinished)} step-2 chunk(s) have no results: {unfinished[:10]}", 66)
    top: dict[str, list] = {}
    totals = {}
    for trait in traits:
        staged = step.work / f"{trait}.tsv"
        best: list[tuple[float, int, list[str]]] = []
        n = 0
        with open(staged, "w") as flat, gzip.open(step.out(f"{trait}.tsv.gz"), "wt") as packed:
            for handle in (flat, packed):
                handle.write("\t".join(COLUMNS) + "\n")
            for directory in chunk_dirs:
                with open(directory / f"{trait}.tsv") as fh:
                    fh.readline()
                    for line in fh:
                        flat.write(line)
                        packed.write(line)
                        fields = line.rstrip("\n").split("\t")
                        n += 1
                        item = (float(fields[-1]), -n, fields)
                        if len(best) < TOP_HITS:
                            heapq.heappush(best, item)
                        else:
                            heapq.heappushpop(best, item)
        step.stage_file("gwas_associations", staged, "associations.tsv", unit=("phenotype", trait))
        totals[trait] = n
        top[trait] = [dict(zip(COLUMNS, fields)) for _, _, fields in sorted(best, reverse=True)]
    step.out("top_hits.json").write_text(json.dumps(top, indent=1))
    step.finish(variants=totals, top_hit={t: hits[0]["variant_id"] if hits else None for t, hits in top.items()})


COMMANDS = {"step1": (step_args, step1), "step2": (step_args, step2), "merge": (step_args, merge)}

if __name__ == "__main__":
    sys.exit(main_of(COMMANDS))
