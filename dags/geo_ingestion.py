"""
### GEO/SRA ingestion with a QC review gate (daily)

Each run covers the whole UTC days of its data interval (one day on the schedule; a backfill re-runs past days
exactly):

1. **search** (pool `ncbi_eutils`): GEO series published in the window that match `query`, their samples and
   SRA runs, through NCBI E-utilities (3 requests/s, 10 with the API key of the `ncbi_eutils` connection).
   A series' runs are found through its BioProject (and any SRA study GEO names), in the same searches as the
   series earlier runs could not resolve, which are looked up again.
2. **register**: new paired-end and single-end samples enter the sample registry as *discovered*, with their
   layout; samples already there keep their status. Samples without public runs are listed and skipped. A
   sequencing series none of whose samples has a public run is recorded in the registry as *unresolved*,
   with the reason, and looked up again by later runs. When every series of the window resolved to nothing
   the run says so as a warning, and **fails** (check `all_series_resolved`) if one of them had samples.
3. **download** (one Batch array job per unit of up to 500 samples): `prefetch` + `fasterq-dump`, runs joined
   and compressed into `raw/<project>/<GSM>_R1.fastq.gz` and `_R2`, where the pipelines read reads.
4. **qc**: fastp per sample; below `min_reads` or `min_q30_rate` a sample fails QC.
5. **outcomes** moves each sample to *downloaded* and then *qc_passed* / *qc_failed*; **multiqc** writes a
   report per series with new QC results; `ingest_qc` and `qc_metrics` are published.
6. **review**: one Required Action per series with samples awaiting review: **Approve** makes them *approved*
   (eligible for `samples: "all approved"` in rnaseq and germline), **Reject** records who and why.

A rerun or backfill of the same days registers, downloads, QCs and asks nothing twice. On the local backend a
directory (`.local-platform/ncbi-mirror`, filled by `genomics_steps.synthetic_geo`) stands in for NCBI and SRA.
"""

from __future__ import annotations

from airflow.sdk import dag

from geo_ingest_dag import (
    all_samples_done,
    all_series_resolved,
    download_and_qc,
    ingestion_dag_args,
    multiqc,
    outcomes,
    publish,
    register,
    review,
    search,
)


@dag(**ingestion_dag_args(__doc__))
def geo_ingestion():
    registered = register(search())
    all_series_resolved(registered)
    result = outcomes(registered)
    download_and_qc(registered) >> result
    all_samples_done(result["incomplete"])
    published = publish(result)
    result >> published
    [multiqc(result), *published] >> review(result)


geo_ingestion()
