"""
### RNA-seq quantification

Per sample: **fastp** trims and filters the reads, **salmon quant** estimates transcript abundances against the
reference's transcriptome. Then the results are published as tables: `transcript_quant`, `gene_quant`,
`qc_metrics` (fastp and salmon metrics) and `job_runs` (what each job ran on and for how long).

Run config (checked by `plan` before anything is submitted):
- `samples`: a list of sample ids, or `"all approved"` for the project's approved samples in the registry;
- reads: found under `input_uri` (default: the lake's `raw/<project>/`), named as BCL Convert writes them
  (`<sample>_S1_L001_R1_001.fastq.gz`, lanes joined in order) or `<sample>_R1.fastq.gz` and `_R2` (R1 only:
  single-end); or named by a `samplesheet` (`sample,fastq_1,fastq_2[,lane|run][,strandedness]`), whose
  samples run unless `samples` is a list;
- `reference`: `references/<reference>/` holds `transcriptome.fa` and `tx2gene.tsv`; its salmon index is
  built once (`salmon_index`, skipped when present) and reused;
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

from genomics_steps.rnaseq import STEPS
from pipeline_dag import index_step, pipeline_dag_args, plan_and_index, sample_step, settle_and_publish
from pipeline_plan import PipelineSpec
from run_products import count_matrices, run_report

SPEC = PipelineSpec(name="rnaseq", steps=STEPS, reference_files=["transcriptome.fa", "tx2gene.tsv"],
                    index_tool="salmon")
# Each sample's FASTQ files (lanes, single- or paired-end, strandedness), as the plan wrote them for this run.
READS = ["--reads-manifest", "{{ ti.xcom_pull(task_ids='plan', key='reads_manifest') or '' }}"]


@dag(**pipeline_dag_args("rnaseq", __doc__))
def rnaseq():
    index = index_step("rnaseq", "salmon_index", "salmon-index", vcpus=2, memory_mib=4096)
    planned, units = plan_and_index(SPEC, index)

    @task_group(group_id="per_sample")
    def per_sample(unit: list[str]):
        """One unit: one sample (mapped fan-out), or up to 500 samples, each step one Batch array job."""
        fastp = sample_step("rnaseq", "fastp", ["fastp", "--input-prefix", "{{ params.input_uri or '' }}", *READS,
                                                "--min-reads", "{{ params.min_reads }}",
                                                "--min-q30-rate", "{{ params.min_q30_rate }}"], unit,
                            vcpus=1, memory_mib=2048,  # fastp holds ~1.1 GiB for its duplication estimate
                            trigger_rule="none_failed")  # the index task is skipped when the index exists
        sample_step("rnaseq", "salmon_quant", ["salmon-quant", "--reference", "{{ params.reference }}", *READS,
                                                "--min-mapping-rate", "{{ params.min_mapping_rate }}"],
                    after=fastp, vcpus=2, memory_mib=2048)

    samples = per_sample.expand(unit=units)
    end = settle_and_publish(SPEC, planned, ["transcript_quant", "gene_quant", "qc_metrics", "job_runs"])
    index >> samples >> end.settled
    run_report(SPEC, planned, end)
    count_matrices(SPEC, end)


rnaseq()
