"""The README's main command: run the rnaseq, germline and regenie_gwas DAGs end to end on the local backend,
on tiny synthetic data made here, then check the science and show the published tables queried by name.

Run through ./dev demo (which installs the Python dependencies and the job images' tools, and prepares
Airflow first). Run it again and every sample is already done for the pipeline version: nothing is
submitted, the tables are published again. ./dev demo events runs batch_events_demo instead.

./dev demo gwas_from_germline runs the chain with no hand-made files: reads of a sequenced cohort whose
genotypes at one planted site drive a trait -> germline (its joint-called cohort VCF) -> regenie_gwas on that
cohort by germline_version; the planted variant must rank first. Its project is `<project>-chain`, so its
phenotype file never replaces the main demo's GWAS inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RNA_SAMPLES = ["RNA1", "RNA2", "RNA3"]
DNA_SAMPLES = ["DNA1", "DNA2", "DNA3"]
MIN_SPEARMAN, MIN_RECALL = 0.9, 0.9
GWAS_VARIANTS_PER_JOB = 600  # 2,500 variants: step 2 runs as an array job of 5 chunks


def run_dag(dag_id: str, conf: dict) -> bool:
    print(f"==> airflow dags test {dag_id} --conf '{json.dumps(conf)}'", flush=True)
    # `dags test` runs every task and trigger in its own process: no scheduler, so no race for the triggers'
    # hold (min_defer_seconds) to guard against; without it each deferral of a quick local job waits 10 s
    env = {"GENOMICS_MIN_DEFER_SECONDS": "0", **os.environ}
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id, "--conf",
                           json.dumps(conf)], capture_output=True, text=True, env=env)
    log_path = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow")) / f"demo-{dag_id}.log"
    log_path.write_text(proc.stdout + proc.stderr)
    for line in (proc.stdout + proc.stderr).splitlines():
        if f"{dag_id}: " in line and ("sample(s)" in line or "trait(s)" in line):  # plan's and outcomes' summaries
            print("    " + line[line.index(f"{dag_id}: "):])
    state = _last_run_state(dag_id)
    if proc.returncode != 0 or state != "success":
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        print(f"the {dag_id} run ended {state}; full output in {log_path}")
        return False
    print(f"    run succeeded (Airflow's output: {log_path})")
    return True


def science(engine, lake: str, project: str) -> list[tuple[str, str, float, bool]]:
    """Each sample's check against the truth, from the published tables: (sample, check, value, passed)."""
    from genomics_steps.synthetic import quantification_spearman, snv_recall

    out = []
    # no user value goes into SQL text: rows are filtered by project here
    _, rows = engine.fetch("SELECT project, sample_id, transcript_id, tpm FROM transcript_quant")
    for sample in RNA_SAMPLES:
        estimated = {t: tpm for p, s, t, tpm in rows if (p, s) == (project, sample)}
        rho = quantification_spearman(lake, project, sample, estimated)
        out.append((sample, "salmon TPM vs true abundance, Spearman", rho, rho >= MIN_SPEARMAN))
    _, rows = engine.fetch("SELECT project, sample_id, chrom, pos, ref, alt FROM variant_calls")
    for sample in DNA_SAMPLES:
        called = {(c, int(pos), r, a) for p, s, c, pos, r, a in rows if (p, s) == (project, sample)}
        recall = snv_recall(lake, project, sample, called)
        out.append((sample, "planted SNVs called, recall", recall, recall >= MIN_RECALL))
    return out


def gwas_science(engine, project: str, truth: dict[str, str]) -> list[tuple[str, str, float, bool]]:
    """Each trait's strongest association must be its planted causal variant: (trait, check, -log10 p, passed)."""
    _, rows = engine.fetch("SELECT project, phenotype, variant_id, log10p FROM gwas_associations")
    out = []
    for trait, causal in truth.items():
        ranked = sorted(((p10, v) for p, t, v, p10 in rows if (p, t) == (project, trait)), reverse=True)
        top = ranked[0] if ranked else (0.0, None)
        out.append((trait, f"top hit is the planted {causal}, -log10 p", top[0], top[1] == causal))
    return out


def gwas_from_germline(project: str, version: str) -> int:
    """germline on the reads of a sequenced cohort, then regenie_gwas on the germline cohort VCF."""
    from genomics_steps import layout, synthetic, synthetic_gwas
    from hooks import backend, lake as lake_io
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve(use_airflow_variable=False)
    lake = settings.lake_root
    print(f"==> a sequenced cohort (reads, a trait driven by one planted SNV, truth) in {lake}, project {project}")
    synthetic.write_reference(lake, "synthetic-v1")
    truth = synthetic_gwas.write_sequenced_cohort(lake, project)
    if not run_dag("germline", {"project": project, "reference": "synthetic-v1", "pipeline_version": version,
                                "samples": truth["samples"], "fan_out": "array"}):
        return 1
    cohort = layout.cohort_vcf(lake, version, project)
    folder = cohort.rsplit("/", 1)[0] + "/"
    if not {"cohort.vcf.gz", "cohort.vcf.gz.tbi"} <= set(lake_io.list_files(settings, folder)):
        print(f"    germline wrote no joint-called cohort VCF at {cohort}")
        return 1
    print(f"    cohort VCF, called jointly by the germline run: {cohort}")
    # plink2: regenie's whole-genome model is not meant for a cohort of 24 samples and 20 sites
    if not run_dag("regenie_gwas", {"project": project, "pipeline_version": version, "germline_version": version,
                                    "engine": "plink2", "variants_per_job": 100}):
        return 1
    _, rows = backend.query_engine(settings).fetch(
        "SELECT project, phenotype, chrom, pos, n, log10p FROM gwas_associations")
    ranked = sorted(((p10, c, pos, n) for p, t, c, pos, n, p10 in rows if (p, t) == (project, truth["trait"])),
                    reverse=True)
    causal = truth["causal"]
    print("==> science: the trait's top hits against the planted site "
          f"{causal['chrom']}:{causal['pos']} {causal['ref']}>{causal['alt']}")
    for log10p, chrom, pos, n in ranked[:3]:
        print(f"    {chrom}:{pos:<8} n={n:<4} -log10 p {log10p:.2f}")
    top = ranked[0] if ranked else (0.0, None, None, 0)
    passed = (top[1], top[2]) == (causal["chrom"].removeprefix("chr"), causal["pos"])
    print(f"    top hit is the planted variant: {'ok' if passed else 'NO'}")
    return 0 if passed else 1


def prepare(lake: str, project: str) -> dict[str, str]:
    """Write the synthetic reference, the RNA and DNA samples' reads and the GWAS cohort to the lake, the data
    every demo run (and the UI's runs after ./dev up) reads; returns each trait's planted causal variant."""
    from genomics_steps import synthetic, synthetic_gwas

    print(f"==> synthetic data (reference, reads, truth) in {lake}")
    synthetic.write_reference(lake, "synthetic-v1")
    for kind, samples in (("rnaseq", RNA_SAMPLES), ("germline", DNA_SAMPLES)):
        for sample in samples:
            synthetic.write_sample(lake, project, "synthetic-v1", sample, kind)
    return synthetic_gwas.write_cohort(lake, project)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", default="pipelines", choices=["pipelines", "events", "gwas_from_germline"])
    parser.add_argument("--project", default="demo")
    parser.add_argument("--pipeline-version", default="1.0")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write the synthetic data and stop (what ./dev up runs before starting Airflow)")
    args = parser.parse_args()
    os.environ.setdefault("GENOMICS_BACKEND", "local")
    # what this machine's hour is worth in sample_costs: an m5.large's on-demand rate (2 vCPUs, 8 GiB; us-east-1,
    # include/prices/aws_prices.json), so the demo shows dollars; the setting's own default is 0
    os.environ.setdefault("GENOMICS_LOCAL_PRICE_PER_HOUR", "0.096")
    if args.what == "events":
        return 0 if run_dag("batch_events_demo", {"project": args.project}) else 1
    if args.what == "gwas_from_germline":
        return gwas_from_germline(f"{args.project}-chain", args.pipeline_version)

    from hooks import backend
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve(use_airflow_variable=False)
    lake = settings.lake_root
    truth = prepare(lake, args.project)
    if args.prepare_only:
        return 0
    base = {"project": args.project, "reference": "synthetic-v1", "pipeline_version": args.pipeline_version}
    if not run_dag("rnaseq", {**base, "samples": RNA_SAMPLES}):
        return 1
    if not run_dag("germline", {**base, "samples": DNA_SAMPLES}):
        return 1
    if not run_dag("regenie_gwas", {"project": args.project, "pipeline_version": args.pipeline_version,
                                    "variants_per_job": GWAS_VARIANTS_PER_JOB}):
        return 1

    engine = backend.query_engine(settings)
    print("==> science: the published results against the synthetic truth")
    checks = science(engine, lake, args.project) + gwas_science(engine, args.project, truth)
    for sample, check, value, passed in checks:
        print(f"    {sample:<7} {check:<42} {value:.3f}  {'ok' if passed else 'BELOW THRESHOLD'}")

    from sql import show

    for title, query in PUBLISHED_QUERIES:
        print(f"==> {title}\n    ./dev sql \"{query}\"")
        show(query)
    return 0 if all(c[3] for c in checks) else 1


# What the README shows: the published tables, queried by name with the same SQL Athena would run.
PUBLISHED_QUERIES = [
    ("gene abundance (table genomics.gene_quant)",
     "SELECT sample_id, gene_id, round(tpm, 1) AS tpm, round(num_reads) AS reads FROM gene_quant "
     "WHERE gene_id IN ('GENE001', 'GENE004') ORDER BY gene_id, sample_id"),
    ("variants (table genomics.variant_calls)",
     "SELECT sample_id, count(*) AS variants, sum(CASE WHEN genotype = '1/1' THEN 1 ELSE 0 END) AS hom_alt, "
     "round(avg(depth), 1) AS mean_depth FROM variant_calls GROUP BY sample_id ORDER BY sample_id"),
    ("QC across both pipelines (table genomics.qc_metrics)",
     "SELECT pipeline, tool, metric, round(avg(value), 4) AS mean FROM qc_metrics WHERE metric IN "
     "('q30_rate', 'percent_mapped', 'mapped_rate', 'duplicate_rate', 'ts_tv') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"),
    ("GWAS top hits (table genomics.gwas_associations)",
     "SELECT phenotype, variant_id, chrom, pos, round(beta, 3) AS beta, round(log10p, 1) AS log10p FROM "
     "(SELECT *, row_number() OVER (PARTITION BY phenotype ORDER BY log10p DESC) AS r FROM gwas_associations) "
     "WHERE r <= 2 ORDER BY phenotype, r"),
    ("cost per sample of each pipeline's latest run (table genomics.sample_costs; this machine priced at "
     "GENOMICS_LOCAL_PRICE_PER_HOUR)",
     "SELECT pipeline, sample_id, count(*) AS steps, round(sum(cost_usd), 6) AS cost_usd, "
     "round(sum(vcpu_hours), 4) AS vcpu_hours FROM sample_costs WHERE run_id IN (SELECT max(run_id) FROM "
     "sample_costs GROUP BY pipeline) GROUP BY 1, 2 ORDER BY 1, 2"),
    ("compute per step (table genomics.job_runs)",
     "SELECT pipeline, step, count(*) AS jobs, round(sum(vcpu_hours) * 3600, 1) AS vcpu_seconds FROM job_runs "
     "GROUP BY 1, 2 ORDER BY 1, 2"),
]


def _last_run_state(dag_id: str) -> str | None:
    """State of the newest run, from Airflow itself (`dags test` may exit 0 on a failed run)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "list-runs", dag_id, "-o", "json"],
        capture_output=True, text=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]  # warnings may precede the JSON
    try:
        runs = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return None
    runs.sort(key=lambda r: r.get("start_date") or "", reverse=True)
    return runs[0]["state"] if runs else None


if __name__ == "__main__":
    sys.exit(main())
