"""Cost per sample: the allocation arithmetic against hand-computed cases, the instance lookup and its caching,
prices and their day cache, the CUR 2.0 reconciliation query on the local engine, and sample_costs published
by a real run on the local backend."""

from __future__ import annotations

import pytest

from costs import FSX_STEP, LOCAL, ON_DEMAND, SPOT, Attempt, CostError, FileSystem, Instance, Job, allocate, per_unit

H = 3_600_000  # one hour in ms
M5_XLARGE = Instance("m5.xlarge", ON_DEMAND, "us-east-1a", 4, 16384)  # $0.192 an hour
M5_LARGE = Instance("m5.large", ON_DEMAND, "us-east-1a", 2, 8192)  # $0.096 an hour
C5_2XLARGE_SPOT = Instance("c5.2xlarge", SPOT, "us-east-1b", 8, 16384)  # $0.14 an hour, say
PRICES = {("m5.xlarge", ON_DEMAND): 0.192, ("m5.large", ON_DEMAND): 0.096, ("c5.2xlarge", SPOT): 0.14}
INSTANCES = {"i-m5xl": M5_XLARGE, "i-m5l": M5_LARGE, "i-c5spot": C5_2XLARGE_SPOT}


def price_of(instance, attempt):
    return PRICES.get((instance.instance_type, instance.purchase_option))


def ran(instance: str, hours: float, start: int = 0, reason: str = "Essential container in task exited"):
    return Attempt(start, start + int(hours * H), instance, reason)


def by_key(rows):
    return {(r.sample, r.step): r for r in rows}


def test_a_job_costs_its_larger_share_of_the_instance_times_price_times_run_time():
    # 2 of 4 vCPUs (0.5) and 4 of 16 GiB (0.25): half of a $0.192 instance for an hour
    job = Job("j1", "S1", "fastp", 2, 4096, (ran("i-m5xl", 1),))
    [row] = allocate([job], ["S1"], INSTANCES, price_of)
    assert row.cost_usd == pytest.approx(0.096)
    assert (row.vcpu_hours, row.gib_hours, row.attempts) == (pytest.approx(2), pytest.approx(4), 1)
    assert (row.instance_types, row.purchase_options, row.lost_to_reclaim_usd) == ({"m5.xlarge"}, {ON_DEMAND}, 0)


def test_memory_decides_when_it_is_the_larger_share_and_no_job_pays_for_more_than_its_instance():
    memory_bound = Job("j1", "S1", "salmon", 1, 12288, (ran("i-m5xl", 2),))  # 0.25 of the vCPUs, 0.75 of memory
    oversized = Job("j2", "S2", "salmon", 8, 4096, (ran("i-m5xl", 1),))  # asks for more vCPUs than the instance
    rows = by_key(allocate([memory_bound, oversized], ["S1", "S2"], INSTANCES, price_of))
    assert rows["S1", "salmon"].cost_usd == pytest.approx(0.192 * 0.75 * 2)
    assert rows["S2", "salmon"].cost_usd == pytest.approx(0.192)


def test_a_spot_reclaim_counts_the_lost_attempt_and_shows_it_apart():
    # 4 of 8 vCPUs, 4 of 16 GiB: half the instance. Reclaimed after 30 min, then a full hour.
    job = Job("j1", "S1", "bwa_mem", 4, 4096, (
        ran("i-c5spot", 0.5, reason="Host EC2 (instance i-0123456789abcdef0) terminated."),
        ran("i-c5spot", 1, start=H)))
    [row] = allocate([job], ["S1"], INSTANCES, price_of)
    assert row.attempts == 2
    assert row.lost_to_reclaim_usd == pytest.approx(0.14 * 0.5 * 0.5)  # 0.035
    assert row.cost_usd == pytest.approx(0.035 + 0.07)
    assert row.purchase_options == {SPOT}


def test_an_out_of_memory_kill_and_its_bigger_retry_both_count_in_the_samples_step():
    first = Job("j1", "S1", "salmon", 1, 2048, (ran("i-m5l", 0.25),))  # vCPU share 0.5: $0.012
    bigger = Job("j2", "S1", "salmon", 1, 8192, (ran("i-m5l", 0.5),))  # the whole instance's memory: $0.048
    [row] = allocate([first, bigger], ["S1"], INSTANCES, price_of)
    assert row.attempts == 2
    assert row.cost_usd == pytest.approx(0.012 + 0.048)
    assert row.lost_to_reclaim_usd == 0, "an out-of-memory kill is not a reclaim"


def test_array_children_are_each_their_own_samples_row():
    children = [Job(f"arr:{i}", f"S{i}", "fastp", 1, 2048, (ran("i-m5xl", hours),))
                for i, hours in enumerate([1, 2, 0.5])]
    rows = by_key(allocate(children, ["S0", "S1", "S2"], INSTANCES, price_of))
    share = 0.25  # 1 of 4 vCPUs, 2 of 16 GiB
    assert {s: r.cost_usd for (s, _), r in rows.items()} == {
        "S0": pytest.approx(0.192 * share), "S1": pytest.approx(0.192 * share * 2),
        "S2": pytest.approx(0.192 * share * 0.5)}


def test_an_index_built_for_the_run_is_split_evenly_across_its_three_samples():
    index = Job("idx", "salmon_index", "salmon_index", 4, 8192, (ran("i-m5xl", 1.5),))  # whole instance: $0.288
    quant = [Job(f"q{i}", s, "salmon_quant", 1, 2048, (ran("i-m5xl", 1),)) for i, s in enumerate(["A", "B", "C"])]
    rows = by_key(allocate([index, *quant], ["A", "B", "C"], INSTANCES, price_of))
    for sample in "ABC":
        assert rows[sample, "salmon_index"].cost_usd == pytest.approx(0.096)
        assert rows[sample, "salmon_index"].vcpu_hours == pytest.approx(4 * 1.5 / 3)
        assert rows[sample, "salmon_quant"].cost_usd == pytest.approx(0.048)
    assert sum(per_unit(rows.values()).values()) == pytest.approx(0.288 + 3 * 0.048), "nothing lost or doubled"


def test_a_gwas_runs_file_system_and_shared_jobs_are_split_across_its_two_traits():
    # 1,200 GiB SCRATCH_2 at $0.14 per GiB-month (730 hours) for 3 hours: $0.690411
    fs = FileSystem("fs-0abc", 1200, 0.14, created_ms=0, deleted_ms=3 * H)
    step1 = Job("s1", "step1", "step1", 4, 8192, (ran("i-m5xl", 1),))  # $0.192, the whole instance
    rows = by_key(allocate([step1], ["height", "bmi"], INSTANCES, price_of, [fs]))
    for trait in ("height", "bmi"):
        assert rows[trait, FSX_STEP].cost_usd == pytest.approx(1200 * 0.14 / 730 * 3 / 2)
        assert rows[trait, "step1"].cost_usd == pytest.approx(0.096)


def test_an_attempt_of_unknown_instance_or_price_is_timed_but_marks_its_row_unpriced():
    unknown = Job("j1", "S1", "fastp", 2, 4096, (ran("i-gone", 1),))
    unpriced = Job("j2", "S2", "fastp", 2, 4096, (ran("i-m5xl", 1),))
    rows = by_key(allocate([unknown, unpriced], ["S1", "S2"], INSTANCES,
                           lambda i, a: None if a.instance == "i-m5xl" else 1.0))
    assert [(r.priced, r.cost_usd, r.vcpu_hours) for r in rows.values()] == [(False, 0, 2), (False, 0, 2)]


def test_an_attempt_that_never_started_costs_nothing_and_leaves_its_row_priced():
    job = Job("j1", "S1", "fastp", 2, 4096, (Attempt(None, None, ""),))
    [row] = allocate([job], ["S1"], INSTANCES, price_of)
    assert (row.cost_usd, row.priced, row.attempts) == (0, True, 1)


def test_impossible_facts_are_refused_by_name():
    with pytest.raises(CostError, match="stopped .* before it started"):
        allocate([Job("j", "S1", "x", 1, 1, (Attempt(10, 5, "i-m5xl"),))], ["S1"], INSTANCES, price_of)
    with pytest.raises(CostError, match="'local' has no capacity"):
        Instance("local", LOCAL, LOCAL, 0, 1024)


# --- what a job ran on: the real events' container instance, resolved on moto (ECS, EC2), batched and cached ---
SHARED = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared"


def test_the_ecs_cluster_of_a_real_events_container_instance_is_read_from_its_arn():
    import json

    from batch_model import JobState
    from hooks.instances import cluster_of

    event = json.loads((SHARED / "real-data" / "batch-events" / "04_array_child_succeeded.json").read_text())
    state = JobState.from_detail(event["detail"])
    [fact] = state.attempt_facts
    assert (fact["started_at"], fact["stopped_at"]) == (1655521805856, 1655543406856)
    assert cluster_of(fact["instance"]) == \
        "AWSBatch-core_arm64_model_run_best_fit_20220420105141263200000008-f8d10bee-1f43-325d-b37c-9f4728eb7f8c"
    old_format = "arn:aws:ecs:us-west-2:123456789012:container-instance/yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyy"
    assert cluster_of(old_format) is None, "an ARN without its cluster cannot be looked up; it stays unknown"


def _container_instances(count: int) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """``count`` EC2 instances (half Spot c5.2xlarge, half on-demand m5.xlarge) registered in a Batch compute
    environment's ECS cluster; returns their container instance ARNs and, per ARN, the instance type and
    purchase option EC2 knows them by."""
    import json

    import boto3

    from tests.conftest import REGION

    ec2, ecs = boto3.client("ec2", region_name=REGION), boto3.client("ecs", region_name=REGION)
    cluster = "AWSBatch-genomics-spot-ce-0123abcd-aaaa-bbbb-cccc-0123456789ab"
    ecs.create_cluster(clusterName=cluster)
    arns, truth = [], {}
    spot_count = (count + 1) // 2
    for kind, n, extra in (("c5.2xlarge", spot_count, {"InstanceMarketOptions": {"MarketType": "spot"}}),
                           ("m5.xlarge", count - spot_count, {})):
        if not n:
            continue
        for inst in ec2.run_instances(ImageId="ami-0123456789abcdef0", InstanceType=kind, MinCount=n, MaxCount=n,
                                      Placement={"AvailabilityZone": f"{REGION}b"}, **extra)["Instances"]:
            ci = ecs.register_container_instance(
                cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": inst["InstanceId"]}))
            arns.append(ci["containerInstance"]["containerInstanceArn"])
            truth[arns[-1]] = (kind, SPOT if extra else ON_DEMAND)
    return arns, truth


def test_container_instances_resolve_to_type_purchase_option_zone_and_capacity(aws):
    from hooks import backend
    from hooks.aws_clients import aws_client
    from hooks.instances import InstanceLookup
    from tests.conftest import REGION

    arns, truth = _container_instances(4)
    lookup = InstanceLookup(aws_client(aws.settings, "ecs"), aws_client(aws.settings, "ec2"),
                            backend.job_state_store(aws.settings))
    found = lookup.resolve(arns)
    assert {a: (i.instance_type, i.purchase_option) for a, i in found.items()} == truth
    assert {i.zone for i in found.values()} == {f"{REGION}b"}
    assert {(i.instance_type, i.vcpus, i.memory_mib) for i in found.values()} == {
        ("c5.2xlarge", 8, 16384), ("m5.xlarge", 4, 16384)}


def test_instance_lookups_are_batched_by_the_hundred_and_never_repeated_for_a_known_instance(aws):
    from hooks import backend
    from hooks.aws_clients import aws_client
    from hooks.instances import InstanceLookup

    arns, _ = _container_instances(150)
    store = backend.job_state_store(aws.settings)
    first = InstanceLookup(aws_client(aws.settings, "ecs"), aws_client(aws.settings, "ec2"), store)
    assert len(first.resolve(arns)) == 150
    assert first.calls == {"ecs:DescribeContainerInstances": 2, "ec2:DescribeInstances": 2,
                           "ec2:DescribeInstanceTypes": 1}
    # another worker, later jobs on the same instances: the job-state store answers, AWS is not asked
    again = InstanceLookup(aws_client(aws.settings, "ecs"), aws_client(aws.settings, "ec2"), store)
    assert len(again.resolve(arns[:10] + arns[140:])) == 20 and again.calls == {}


def test_a_job_that_ended_on_aws_stages_its_instance_type_and_attempts_for_the_runs_costs(aws):
    import json

    from hooks.lake import list_files, read_head
    from run_costs import ATTEMPTS_DATASET, last_instance_type, resolve_instances, stage_job_attempts

    arns, truth = _container_instances(2)
    row = {"job_id": "job-1", "sample": "S1", "attempt_facts": [
        {"instance": arns[0], "started_at": 0, "stopped_at": H // 2, "reason": "Host EC2 (instance i-1) terminated."},
        {"instance": arns[1], "started_at": H, "stopped_at": 2 * H, "reason": "Essential container in task exited"}]}
    instances = resolve_instances(aws.settings, row["attempt_facts"])
    assert last_instance_type(aws.settings, row, instances) == truth[arns[1]][0]
    stage_job_attempts(aws.settings, pipeline="rnaseq", run_id="manual__1", project="P", step="fastp", vcpus=2,
                       memory_mib=4096, job_rows=[row], instances=instances)
    prefix = f"{aws.settings.lake_root}/staging/{ATTEMPTS_DATASET}/"
    [path] = list_files(aws.settings, prefix)
    doc = json.loads(read_head(aws.settings, prefix + path))
    assert [a["instance"] for a in doc["attempts"]] == arns and set(doc["instances"]) == set(arns)


# --- prices: the Price List API (a double: moto has none), the Spot price history (moto), the day cache ---------
def _book(settings, **kwargs):
    from hooks.prices import PriceBook
    from tests.doubles.price_list import PriceListDouble

    pricing = PriceListDouble({("m5.xlarge", "eu-west-1"): 0.214, ("c5.2xlarge", "eu-west-1"): 0.384})
    return PriceBook(settings, pricing=pricing, **kwargs), pricing


def test_on_demand_price_comes_from_the_one_linux_shared_product_of_the_price_list(aws):
    book, pricing = _book(aws.settings)
    assert book.hourly(Instance("m5.xlarge", ON_DEMAND, "eu-west-1a", 4, 16384), 0) == pytest.approx(0.214)
    [call] = pricing.calls
    assert {f["Field"]: f["Value"] for f in call["Filters"]} == {
        "instanceType": "m5.xlarge", "regionCode": "eu-west-1", "operatingSystem": "Linux", "tenancy": "Shared",
        "preInstalledSw": "NA", "capacitystatus": "Used"}


def test_prices_are_cached_in_the_lake_per_day_and_asked_once(aws):
    m5 = Instance("m5.xlarge", ON_DEMAND, "eu-west-1a", 4, 16384)
    spot = Instance("c5.2xlarge", SPOT, "eu-west-1b", 8, 16384)
    book, _ = _book(aws.settings)
    for start in (0, H, 5 * H):  # one UTC day
        assert book.hourly(m5, start) == pytest.approx(0.214)
        assert book.hourly(spot, start) > 0
    assert book.calls == {"pricing:GetProducts": 1, "ec2:DescribeSpotPriceHistory": 1}
    book.save()
    later, pricing = _book(aws.settings)  # another run the same day
    assert later.hourly(m5, 2 * H) == pytest.approx(0.214) and later.hourly(spot, 3 * H) == book.hourly(spot, 0)
    assert later.calls == {} and pricing.calls == []
    later.hourly(m5, 30 * H)
    assert later.calls == {"pricing:GetProducts": 1}, "the next day is asked again"


def test_the_offline_price_file_prices_without_any_call_and_spot_falls_back_to_on_demand(aws):
    from dataclasses import replace

    from hooks.prices import offline_prices

    book, pricing = _book(replace(aws.settings, price_source="offline"))
    listed = offline_prices()
    assert listed["as_of"] and listed["note"]
    assert book.hourly(Instance("m5.xlarge", ON_DEMAND, "eu-west-1a", 4, 16384), 0) == listed[
        "on_demand_per_hour"]["m5.xlarge"]
    assert book.hourly(Instance("c5.2xlarge", SPOT, "eu-west-1b", 8, 16384), 0) == listed[
        "on_demand_per_hour"]["c5.2xlarge"]
    assert book.hourly(Instance("x9.huge", ON_DEMAND, "eu-west-1a", 4, 16384), 0) is None
    assert book.calls == {} and pricing.calls == []


def test_the_local_backends_machine_is_priced_by_its_setting(local):
    from dataclasses import replace

    from hooks.instances import local_instance
    from hooks.prices import PriceBook

    assert PriceBook(local).hourly(local_instance(), 0) == 0, "default: the machine is already paid for"
    assert PriceBook(replace(local, local_price_per_hour=0.25)).hourly(local_instance(2, 4096), 0) == 0.25



def test_sample_costs_are_staged_with_the_columns_the_staging_table_declares():
    import re
    from pathlib import Path

    import run_costs

    sql = (Path(__file__).resolve().parents[1] / "include" / "sql" / "staging" / "sample_costs.sql").read_text()
    block = sql.split("{% block columns %}", 1)[1].split("{% endblock %}", 1)[0]
    assert tuple(re.findall(r"^\s*([a-z_]+)\s+\w+,?\s*$", block, flags=re.M)) == run_costs.COLUMNS


# --- the bill: CUR 2.0 split cost allocation data, queried on the local engine -----------------------------
RUN = "manual__2026-11-30T08:00:00+00:00"


def _publish_sample_costs(settings) -> None:
    """A run of two samples and a shared index on the local machine at $0.50 an hour (2 vCPUs, 8 GiB), costed
    and published as the run's tasks do: fastp (1 vCPU, 2 GiB: half the machine) costs $0.25 per sample, the
    index (2 vCPUs for an hour: all of it) $0.50, split."""
    from operators.publish import PublishTableOperator
    from run_costs import resolve_instances, stage_job_attempts, stage_run_costs
    from dataclasses import replace

    from tests.conftest import task_context

    settings = replace(settings, local_price_per_hour=0.5, local_vcpus=2, local_memory_mib=8192)
    instances = resolve_instances(settings, [])
    for step, unit, vcpus in (("fastp", "S1", 1), ("fastp", "S2", 1), ("salmon_index", "salmon_index", 2)):
        row = {"job_id": f"{step}-{unit}", "sample": unit,
               "attempt_facts": [{"instance": "", "started_at": 0, "stopped_at": H, "reason": ""}]}
        stage_job_attempts(settings, pipeline="rnaseq", run_id=RUN, project="P1", step=step, vcpus=vcpus,
                           memory_mib=2048, job_rows=[row], instances=instances)
    costed = stage_run_costs(settings, pipeline="rnaseq", run_id=RUN, project="P1", units=["S1", "S2"])
    assert costed["total_usd"] == pytest.approx(1.0) and costed["units"] == ["S1", "S2"]
    PublishTableOperator(task_id="publish_sample_costs", table="sample_costs", project="P1", pipeline="rnaseq",
                         pipeline_version="1.0", units=costed["units"]).execute(task_context(dag_id="rnaseq",
                                                                                             run_id=RUN))


def _cur_export(settings, path) -> None:
    """A small CUR 2.0 export: this run's ECS tasks (two usage lines each, vCPU and memory, with split costs),
    its FSx file system, and what must not count: the EC2 instance's own line, another run's task, tax."""
    import duckdb

    from batch_model import tag_value

    lines = [  # run, product, line type, resource, parent instance, split, unused, unblended, step, sample
        (RUN, "AmazonECS", "Usage", "task/a1", "i-1", 0.20, 0.03, None, "fastp", "S1"),
        (RUN, "AmazonECS", "Usage", "task/a1", "i-1", 0.08, 0.01, None, "fastp", "S1"),
        (RUN, "AmazonECS", "Usage", "task/a2", "i-1", 0.22, 0.01, None, "fastp", "S2"),
        (RUN, "AmazonECS", "Usage", "task/a2", "i-1", 0.07, 0.00, None, "fastp", "S2"),
        (RUN, "AmazonECS", "Usage", "task/ix", "i-2", 0.30, 0.02, None, "salmon_index", None),
        (RUN, "AmazonECS", "Usage", "task/ix", "i-2", 0.15, 0.00, None, "salmon_index", None),
        (RUN, "AmazonFSx", "Usage", "fs-1", None, None, None, 0.69, None, None),
        (RUN, "AmazonEC2", "Usage", "i-1", None, None, None, 1.23, "fastp", None),
        (RUN, "AmazonEC2", "Tax", "", None, None, None, 0.10, None, None),
        ("manual__other", "AmazonECS", "Usage", "task/b1", "i-1", 9.99, 0.0, None, "fastp", "S1"),
    ]

    def sql(value, kind):
        return f"NULL::{kind}" if value is None else f"{value!r}::{kind}".replace('"', "'")

    selects = []
    for run, product, kind, resource, parent, split, unused, unblended, step, sample in lines:
        tags = {"user_project": "P1", "user_airflow_dag": "rnaseq", "user_run_id": tag_value(run),
                **({"user_step": step} if step else {}), **({"user_sample": sample} if sample else {})}
        selects.append(
            f"SELECT '{product}' AS line_item_product_code, '{kind}' AS line_item_line_item_type, "
            f"'arn:aws:ecs:eu-west-1:123456789012:{resource}' AS line_item_resource_id, "
            f"{sql(parent, 'VARCHAR')} AS split_line_item_parent_resource_id, "
            f"{sql(split, 'DOUBLE')} AS split_line_item_split_cost, "
            f"{sql(unused, 'DOUBLE')} AS split_line_item_unused_cost, "
            f"{sql(split, 'DOUBLE')} * 1.1 AS split_line_item_public_on_demand_split_cost, "
            f"{sql(unblended, 'DOUBLE')} AS line_item_unblended_cost, "
            "MAP {" + ", ".join(f"'{k}': '{v}'" for k, v in tags.items()) + "} AS resource_tags")
    with duckdb.connect() as con:
        con.execute(f"COPY ({' UNION ALL '.join(selects)}) TO '{path}' (FORMAT PARQUET)")
    with duckdb.connect(str(settings.local_catalog_path)) as con:  # the table a Glue crawler would define
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {settings.database}")
        con.execute(f"CREATE VIEW {settings.database}.cur_export AS SELECT * FROM read_parquet('{path}')")


def test_the_cur_query_gives_a_runs_actual_cost_per_step_and_tagged_sample_and_nothing_else(local, tmp_path):
    from batch_model import tag_value
    from hooks import backend
    from hooks.sql_render import Ident, render

    _publish_sample_costs(local)
    _cur_export(local, tmp_path / "cur.parquet")
    sql = render("costs/cur_run_cost", database=Ident(local.database), cur_table=Ident("cur_export"))
    _, rows = backend.query_engine(local).fetch(sql, ["P1", "rnaseq", tag_value(RUN)])
    assert [(step, sample, n, round(usd, 6), round(unused, 6)) for step, sample, n, usd, unused, _ in rows] == [
        ("fastp", "S1", 1, 0.28, 0.04), ("fastp", "S2", 1, 0.29, 0.01), ("fsx", None, 1, 0.69, 0),
        ("salmon_index", None, 1, 0.45, 0.02)]


def test_the_reconciliation_sets_each_steps_estimate_beside_the_bill(local, tmp_path):
    from batch_model import tag_value
    from hooks import backend
    from hooks.sql_render import Ident, render

    _publish_sample_costs(local)
    _cur_export(local, tmp_path / "cur.parquet")
    sql = render("costs/reconcile_run", database=Ident(local.database), cur_table=Ident("cur_export"))
    _, rows = backend.query_engine(local).fetch(sql, ["P1", RUN, "P1", "rnaseq", tag_value(RUN)])
    got = {step: (est, actual, diff) for step, est, _, _, actual, _, diff in rows}
    assert got["fastp"] == (pytest.approx(0.5), pytest.approx(0.57), pytest.approx(0.07))
    assert got["salmon_index"] == (pytest.approx(0.5), pytest.approx(0.45), pytest.approx(-0.05))
    assert got["fsx"] == (None, pytest.approx(0.69), None), "the local run had no FSx: the bill shows it alone"


def test_the_demo_shows_each_samples_cost_from_the_published_table(local):
    import importlib.util
    from pathlib import Path

    from hooks import backend

    path = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo_script", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    [query] = [q for title, q in demo.PUBLISHED_QUERIES if "sample_costs" in title]
    _publish_sample_costs(local)
    columns, rows = backend.query_engine(local).fetch(query)
    assert columns[:4] == ["pipeline", "sample_id", "steps", "cost_usd"]
    assert [r[:4] for r in rows] == [("rnaseq", "S1", 2, 0.5), ("rnaseq", "S2", 2, 0.5)], \
        "fastp $0.25 and half the $0.50 index each"

# --- end to end: a real rnaseq run on the local backend publishes sample_costs -----------------------------
@pytest.fixture(scope="module")
def dagbag():
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))


@pytest.mark.e2e
def test_a_pipeline_run_publishes_each_samples_cost_per_step_from_its_jobs_run_times(local, dagbag, monkeypatch,
                                                                                      capfd):
    from genomics_steps import synthetic

    from hooks import backend
    from tests.conftest import use_settings

    settings = use_settings(monkeypatch, local, local_price_per_hour=0.5, local_vcpus=2, local_memory_mib=8192)
    samples = ["C1", "C2"]
    synthetic.write_reference(settings.lake_root, "synthetic-v1")
    for sample in samples:
        synthetic.write_sample(settings.lake_root, "e2e", "synthetic-v1", sample, "rnaseq")
    run = dagbag.dags["rnaseq"].test(run_conf={"project": "e2e", "samples": samples, "reference": "synthetic-v1"})
    assert run.state == "success"

    engine = backend.query_engine(settings)
    _, jobs = engine.fetch("SELECT sample_id, step, vcpus, memory_mib, runtime_seconds FROM job_runs")
    share = {step: max(vcpus / 2, memory / 8192) for _, step, vcpus, memory, _ in jobs}
    expected = {(s, step): 0.5 * share[step] * seconds / 3600 for s, step, _, _, seconds in jobs if s in samples}
    assert {step for _, step in expected} == {"fastp", "salmon_quant"}
    _, costs = engine.fetch("SELECT sample_id, step, cost_usd, instance_type, purchase_option, attempts, priced "
                            "FROM sample_costs")
    got = {(s, step): cost for s, step, cost, *_ in costs}
    assert {s for s, _ in got} == set(samples)
    for key, dollars in expected.items():
        assert got[key] == pytest.approx(dollars, abs=1e-6), key
    # the run's own jobs (the index build, the count-matrix merge, the MultiQC report) are shared by its 2
    # samples, and are in job_runs beside the samples' jobs
    assert {step for _, step in got} == {"fastp", "salmon_quant", "salmon_index", "merge", "multiqc"}
    for step in ("salmon_index", "merge", "multiqc"):
        shared = {k: v for k, v in got.items() if k[1] == step}
        assert len(shared) == 2 and len(set(shared.values())) == 1 and min(shared.values()) > 0, step
    assert {unit for unit, *_ in jobs} == {*samples, "salmon_index", "merge", "multiqc"}
    assert all(row[3:] == ("local", "local", 1, True) for row in costs)
    assert "estimated cost $" in capfd.readouterr().out


def test_a_runs_file_systems_are_found_by_its_tags_and_priced_by_capacity_type_and_lifetime(aws):
    from dataclasses import replace
    from types import SimpleNamespace

    from hooks import backend
    from hooks.prices import PriceBook
    from operators.fsx import run_tags
    from run_costs import run_file_systems

    api = backend.fsx(aws.settings)
    mine = SimpleNamespace(dag_id="germline", run_id="manual__1")
    other = SimpleNamespace(dag_id="germline", run_id="manual__2")
    fs = api.create_file_system(token="t1", deployment_type="PERSISTENT_2", capacity_gib=2400, throughput=250,
                                tags=run_tags(aws.settings, mine, "P"))
    api.create_file_system(token="t2", deployment_type="SCRATCH_2", capacity_gib=1200, throughput=None,
                           tags=run_tags(aws.settings, other, "P"))
    created = int(fs["CreationTime"].timestamp() * 1000)
    book = PriceBook(replace(aws.settings, price_source="offline"))
    [found] = run_file_systems(aws.settings, "germline", "manual__1", book, now_ms=created + 2 * H)
    assert (found.file_system_id, found.capacity_gib, found.price_per_gib_month) == (
        fs["FileSystemId"], 2400, book.offline["fsx_lustre_per_gib_month"]["PERSISTENT_2:250"])
    assert found.cost == pytest.approx(2400 * 0.21 / 730 * 2)
