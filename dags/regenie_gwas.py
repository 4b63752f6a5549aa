"""
### regenie GWAS on a per-run FSx for Lustre file system

`plan` checks the run config (inputs present, traits in the phenotype file, engine, file system size) before
anything is created. Then:

1. **fsx_create** (setup): an FSx for Lustre file system for this run (SCRATCH_2 by default, Lustre 2.15),
   its input folders linked from S3 and `/output` linked to `results/regenie_gwas/<version>/project=<p>/`;
   waits deferred until it is usable.
2. **step1**: one job; a VCF or BCF of genotypes (`genotypes`, or the project's germline cohort named by
   `germline_version`) converted with plink2 onto the file system for every job, regenie's whole-genome model
   (plink2 has none; `step1_predictions` reuses an earlier one) and the step-2 chunk plan. All jobs use the
   job definition `regenie_image` names.
3. **step2**: one Batch array job, a child per chunk of at most `variants_per_job` variants of one chromosome;
   every child reads the genotypes and step 1's predictions from the shared file system.
4. **merge**: one table per trait, the top hits, rows staged for `gwas_associations`.
5. **fsx_export** to S3, **publish** `gwas_associations` (one partition per trait) and `job_runs`.
6. **fsx_delete** (teardown): runs whether the jobs succeeded or failed; a failed run still fails.
   `fsx_sweeper` deletes what a teardown could not.

Locally the file system is a directory under `.local-platform/fsx/` with the same lifecycle, and the engine
is the regenie on PATH if there is one, else plink2 `--glm` (Debian package); on AWS regenie runs in the
`docker/gwas` image.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from operators.batch_job import BatchJobOperator
from operators.fsx import FsxCreateOperator, FsxDeleteOperator, FsxExportOperator
from operators.publish import PublishTableOperator

FSX = "{{ ti.xcom_pull(task_ids='fsx_create') | tojson }}"


def _gwas_job(step: str, command, job_definition, **kwargs) -> BatchJobOperator:
    return BatchJobOperator(task_id=step, step=step, project="{{ params.project }}", pipeline="regenie_gwas",
                            job_definition=job_definition, command=command, environment={"GENOMICS_FSX": FSX},
                            timeout_seconds=kwargs.pop("timeout_seconds", 6 * 3600), **kwargs)


@dag(
    dag_id="regenie_gwas",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    tags=["pipeline", "gwas", "fsx"],
    doc_md=__doc__,
    default_args={"owner": "platform", "retries": 2},
    params=__import__("gwas_plan").gwas_params(),
)
def regenie_gwas():
    @task(multiple_outputs=True)
    def plan(params=None, dag_run=None, dag=None) -> dict:
        from gwas_plan import plan_for_airflow
        from pipeline_plan import refuse_unknown_keys

        refuse_unknown_keys(dag_run.conf, dag.params)
        return plan_for_airflow(params)

    @task
    def chunks(fsx: dict, dag_run=None) -> list[str]:
        """The step-2 chunks step 1 planned (read from the lake: Airflow cannot read the file system)."""
        import json

        from genomics_steps.layout import chunk_plan_uri
        from hooks import lake
        from batch_model import MAX_ARRAY_SIZE
        from genomics_steps.names import SAMPLE_ID
        from platform_settings import PlatformSettings

        settings = PlatformSettings.resolve()
        uri = chunk_plan_uri(settings.lake_root, dag_run.dag_id, dag_run.run_id, fsx["file_system_id"])
        ids = [c["id"] for c in json.loads(lake.read_head(settings, uri, 64 * 1024 * 1024))["chunks"]]
        if len(ids) > MAX_ARRAY_SIZE or not all(SAMPLE_ID.ok(i) for i in ids):
            raise ValueError(f"{len(ids)} chunks: an array job takes at most 10,000; raise variants_per_job")
        return ids

    @task
    def job_units(chunk_ids: list[str]) -> list[str]:
        return ["step1", *chunk_ids, "merge"]

    @task
    def costs(traits: list[str], params=None, dag_run=None) -> dict:
        """The run's spend (its jobs and its file system) split across its traits, staged for sample_costs."""
        from platform_settings import PlatformSettings
        from run_costs import stage_run_costs, summary_line

        costed = stage_run_costs(PlatformSettings.resolve(), pipeline="regenie_gwas", run_id=dag_run.run_id,
                                 project=params["project"], units=traits, fsx_of_dag=dag_run.dag_id)
        print(summary_line("regenie_gwas", costed))
        return costed

    planned = plan()
    fsx = FsxCreateOperator(task_id="fsx_create", project="{{ params.project }}", inputs=planned["fsx_inputs"],
                            output_folder=planned["results"], deployment_type="{{ params.fsx_deployment_type }}",
                            capacity_gib="{{ params.fsx_capacity_gib }}", throughput="{{ params.fsx_throughput }}")
    definition = planned["job_definition"]  # the regenie_image Param, checked by plan
    step1 = _gwas_job("step1", planned["step1_command"], definition, vcpus=2, memory_mib=4096,
                      reused_from=planned["step1_predictions"])
    chunk_ids = chunks(fsx.output)
    step2 = _gwas_job("step2", planned["step2_command"], definition, samples=chunk_ids, vcpus=2, memory_mib=4096,
                      reused_from=planned["step1_predictions"])
    merge = _gwas_job("merge", planned["merge_command"], definition, vcpus=1, memory_mib=2048)
    export = FsxExportOperator(task_id="fsx_export", paths=["output"],
                               file_system_id="{{ ti.xcom_pull(task_ids='fsx_create')['file_system_id'] }}")
    delete = FsxDeleteOperator(task_id="fsx_delete")
    publish = [
        PublishTableOperator(task_id="publish_gwas_associations", table="gwas_associations",
                             project="{{ params.project }}", pipeline="regenie_gwas",
                             pipeline_version="{{ params.pipeline_version }}", units=planned["traits"]),
        PublishTableOperator(task_id="publish_job_runs", table="job_runs", project="{{ params.project }}",
                             pipeline="regenie_gwas", pipeline_version="{{ params.pipeline_version }}",
                             units=job_units(chunk_ids)),
    ]
    costed = costs(planned["traits"])
    publish.append(PublishTableOperator(task_id="publish_sample_costs", table="sample_costs",
                                        project="{{ params.project }}", pipeline="regenie_gwas",
                                        pipeline_version="{{ params.pipeline_version }}", units=costed["units"],
                                        skip_if_no_units=True))
    fsx >> step1 >> chunk_ids >> step2 >> merge >> [export, costed, *publish]
    [export, costed] >> delete.as_teardown(setups=fsx)


regenie_gwas()
