"""The regenie_gwas DAG: run config checks, the chunk plan, the steps on a stand-in file system, and the
whole DAG on the local backend (plink2 --glm on a synthetic cohort) with the planted causal variants found."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from genomics_steps import layout, synthetic_gwas

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def _jobs(local) -> int:
    from local_batch.control_plane import ControlPlane

    return sum(ControlPlane(local.local_home).counts().values())


@pytest.mark.e2e
def test_gwas_end_to_end_ranks_the_planted_variants_first_and_deletes_its_file_system(local, dagbag):
    from hooks import backend

    truth = synthetic_gwas.write_cohort(local.lake_root, "e2e")
    dag = dagbag.dags["regenie_gwas"]
    for task in dag.tasks:  # a failure shows at once instead of after the retries' delays
        task.retries = 0
    run = dag.test(run_conf={"project": "e2e", "variants_per_job": 600})
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    assert _jobs(local) == 1 + (1 + 5) + 1, "step 1, one step-2 array job with a child per chunk, merge"

    engine = backend.query_engine(local)
    for trait, causal in truth.items():
        _, rows = engine.fetch(f"SELECT variant_id, log10p FROM gwas_associations WHERE phenotype = '{trait}' "
                               "ORDER BY log10p DESC LIMIT 2")
        assert rows[0][0] == causal and rows[0][1] > 10 and rows[1][1] < 8, (trait, rows)
    _, counts = engine.fetch("SELECT phenotype, count(*) FROM gwas_associations GROUP BY phenotype ORDER BY 1")
    assert counts == [("trait_a", 2500), ("trait_b", 2500)]
    _, units = engine.fetch("SELECT count(DISTINCT sample_id) FROM job_runs WHERE pipeline = 'regenie_gwas'")
    assert units == [(7,)], "step1, five chunks, merge"

    results = Path(local.lake_root.removeprefix("file://")) / "results/regenie_gwas/1.0/project=e2e"
    with gzip.open(results / "associations/trait_a.tsv.gz", "rt") as fh:
        assert sum(1 for _ in fh) == 2501, "exported from the file system: header + every variant"
    assert (results / "step1/chunks.json").is_file()
    api = backend.fsx(local)
    assert api.list_file_systems() == [], "the teardown deleted the run's file system"
