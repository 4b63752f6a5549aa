"""
### Germline variant calling

Per sample: **bwa mem** aligns the reads (`bwa_mem`), **samtools** sorts, marks duplicates and indexes
(`markdup`), **bcftools mpileup | call** calls variants (`call`) and **bcftools stats** summarises them
(`stats`). Then the results are published as tables: `variant_calls`, `qc_metrics` (samtools and bcftools
metrics) and `job_runs`.

Then the project's **cohort** for this version, over every completed sample (this run's and earlier runs'):
`bcftools mpileup | call -m` over all samples' BAMs together as one Batch array job, a child per region of the
reference (`cohort_regions`), concatenated and indexed into `results/germline/<version>/project=<p>/cohort/
cohort.vcf.gz` and published as `cohort_variants`; skipped when its samples and regions are those already built.
On AWS the region jobs read the BAMs from a file system of the run (FSx for Lustre, deleted as teardown).

Run config (checked by `plan` before anything is submitted):
- `samples`: a list of sample ids, or `"all approved"` for the project's approved samples in the registry;
- reads: found under `input_uri` (default: the lake's `raw/<project>/`), named as BCL Convert writes them
  (`<sample>_S1_L001_R1_001.fastq.gz`, lanes joined in order) or `<sample>_R1.fastq.gz` and `_R2` (R1 only:
  single-end); or named by a `samplesheet` (`sample,fastq_1,fastq_2[,lane|run]`), whose samples run unless
  `samples` is a list;
- `reference`: `references/<reference>/genome.fa`; its bwa index is built once (`bwa_index`, skipped when
  present) and reused;
- `pipeline_version`: outputs are keyed by it; samples already complete for this version are not submitted
  again (one listing decides), unless `force`;
- `fan_out`: one Batch job per sample (mapped tasks) or Batch array jobs of up to 500 samples.

Runs: daily at 00:00 UTC on the samples approved the previous UTC day (a backfill: each day's), on the asset
events of geo_ingestion's approvals (the samples approved), and by trigger with run config (paused when
created; README "Schedules, backfills and approvals").

Every Batch task defers until its job's "Batch Job State Change" event arrives; nothing polls DescribeJobs.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from genomics_steps.germline import STEPS
from cohort_dag import cohort_tasks
from pipeline_dag import index_step, pipeline_dag_args, plan_and_index, sample_step, settle_and_publish
from pipeline_plan import PipelineSpec
from run_products import run_report

SPEC = PipelineSpec(name="germline", steps=STEPS, reference_files=["genome.fa"], index_tool="bwa")
REFERENCE = ["--reference", "{{ params.reference }}"]
# Each sample's FASTQ files (lanes, single- or paired-end), as the plan wrote them for this run.
READS = ["--reads-manifest", "{{ ti.xcom_pull(task_ids='plan', key='reads_manifest') or '' }}"]


DAG_ARGS = pipeline_dag_args("germline", __doc__)
DAG_ARGS["params"] = {**DAG_ARGS["params"], **__import__("cohort_plan").cohort_params()}
DAG_ARGS["tags"] = [*DAG_ARGS["tags"], "fsx"]


@dag(**DAG_ARGS)
def germline():
    index = index_step("germline", "bwa_index", "bwa-index", vcpus=1, memory_mib=4096)
    planned, units = plan_and_index(SPEC, index)

    @task_group(group_id="per_sample")
    def per_sample(unit: list[str]):
        """One unit: one sample (mapped fan-out), or up to 500 samples, each step one Batch array job."""
        align = sample_step("germline", "bwa_mem", ["bwa-mem", *REFERENCE, *READS, "--input-prefix",
                                                     "{{ params.input_uri or '' }}"],
                            unit, vcpus=2, memory_mib=4096, trigger_rule="none_failed")
        markdup = sample_step("germline", "markdup", ["markdup", "--min-reads", "{{ params.min_reads }}",
                                                         "--min-mapping-rate", "{{ params.min_mapping_rate }}"],
                              after=align, vcpus=2, memory_mib=2048)
        call = sample_step("germline", "call", ["call", *REFERENCE], after=markdup, vcpus=1, memory_mib=2048)
        sample_step("germline", "stats", ["stats"], after=call, vcpus=1, memory_mib=1024)

    samples = per_sample.expand(unit=units)
    end = settle_and_publish(SPEC, planned, ["variant_calls", "qc_metrics", "job_runs"])
    index >> samples >> end.settled
    cohort_tasks(end.settled) >> end.costs  # the cohort's jobs are the run's too: costed and in job_runs
    run_report(SPEC, planned, end)


germline()
