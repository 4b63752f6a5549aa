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
