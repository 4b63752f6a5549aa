"""Cost per sample: how a run's spend is allocated to its samples (or GWAS traits) and steps. Pure arithmetic,
no I/O: the run's job facts, the instances they ran on and the prices come in, ``sample_costs`` rows go out.

The method (Seqera's estimate, per attempt):
- a job attempt costs the instance's hourly price x the larger of the job's vCPU share and memory share of that
  instance (at most the whole instance) x the attempt's run time. Every attempt counts: one a Spot reclaim
  ended (status reason "Host EC2 ...") is money spent for nothing and is also shown apart, ``lost_to_reclaim``;
  a job killed for memory and submitted again bigger is another job, and both jobs count;
- a job of a whole run (an index build, GWAS step 1, a step-2 chunk, merge) is split evenly across the run's
  units (its samples, or its traits);
- a run's FSx file system costs capacity (GiB) x price per GiB-month prorated by the hours it existed, split
  evenly across the run's units as step ``fsx``;
- each array child is its own job. What a job did not use of its instance (idle capacity, the EBS volume,
  data transfer, S3 requests) is not counted: the CUR query (include/sql/costs/) gives the bill's figure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

HOURS_PER_MONTH = 730.0  # AWS prorates monthly storage prices over 730 hours
RECLAIM_REASON_PREFIX = "Host EC2"  # batch_model.SPOT_RECLAIM_REASON without its glob
SPOT, ON_DEMAND, LOCAL, UNKNOWN = "spot", "on_demand", "local", "unknown"
FSX_STEP = "fsx"

COLUMNS = ("sample", "step", "attempts", "instance_type", "purchase_option", "vcpu_hours", "gib_hours", "cost_usd",
           "lost_to_reclaim_usd", "priced")


class CostError(ValueError):
    """A fact the arithmetic cannot use (a negative duration, an instance of no capacity)."""


@dataclass(frozen=True)
class Instance:
    """What an attempt ran on: its type, how it was bought, where, and its whole capacity."""

    instance_type: str
    purchase_option: str  # SPOT | ON_DEMAND | LOCAL | UNKNOWN
    zone: str
    vcpus: float
    memory_mib: float

    def __post_init__(self) -> None:
        if self.vcpus <= 0 or self.memory_mib <= 0:
            raise CostError(f"instance {self.instance_type!r} has no capacity: vcpus={self.vcpus}, "
                            f"memory_mib={self.memory_mib}")


@dataclass(frozen=True)
class Attempt:
    started_ms: int | None
    stopped_ms: int | None
    instance: str  # key into the instances mapping (a container instance ARN, or "local")
    reason: str = ""

    @property
    def hours(self) -> float:
        if self.started_ms is None or self.stopped_ms is None:
            return 0.0  # never started: no instance time was spent on it
        if self.stopped_ms < self.started_ms:
            raise CostError(f"attempt stopped ({self.stopped_ms}) before it started ({self.started_ms})")
        return (self.stopped_ms - self.started_ms) / 3_600_000

    @property
    def reclaimed(self) -> bool:
        return self.reason.startswith(RECLAIM_REASON_PREFIX)


@dataclass(frozen=True)
class Job:
    """One Batch job or array child: the unit it ran for (a sample, a trait, or a step name for a job of the
    whole run), what it asked for, and its attempts."""

    job_id: str
    unit: str
    step: str
    vcpus: float
    memory_mib: float
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class FileSystem:
    """A run's FSx file system: its capacity, price and how long it existed."""

    file_system_id: str
    capacity_gib: float
    price_per_gib_month: float
    created_ms: int
    deleted_ms: int

    @property
    def cost(self) -> float:
        if self.deleted_ms < self.created_ms:
            raise CostError(f"file system {self.file_system_id} deleted before it was created")
        hours = (self.deleted_ms - self.created_ms) / 3_600_000
        return self.capacity_gib * self.price_per_gib_month / HOURS_PER_MONTH * hours


@dataclass
class Row:
    sample: str
    step: str
    attempts: int = 0
    instance_types: set[str] = field(default_factory=set)
    purchase_options: set[str] = field(default_factory=set)
    vcpu_hours: float = 0.0
    gib_hours: float = 0.0
    cost_usd: float = 0.0
    lost_to_reclaim_usd: float = 0.0
    priced: bool = True  # False when an attempt's instance or price was unknown (its cost is then not counted)

    def values(self) -> list:
        return [self.sample, self.step, self.attempts, ",".join(sorted(self.instance_types)),
                ",".join(sorted(self.purchase_options)), round(self.vcpu_hours, 6), round(self.gib_hours, 6),
                round(self.cost_usd, 6), round(self.lost_to_reclaim_usd, 6), self.priced]


def share(job_vcpus: float, job_memory_mib: float, instance: Instance) -> float:
    """The fraction of ``instance`` a job holds: the larger of its vCPU and memory shares, at most 1."""
    return min(1.0, max(job_vcpus / instance.vcpus, job_memory_mib / instance.memory_mib))


def attempt_cost(job: Job, attempt: Attempt, instance: Instance, hourly_price: float) -> float:
    return hourly_price * share(job.vcpus, job.memory_mib, instance) * attempt.hours


PriceOf = Callable[[Instance, Attempt], "float | None"]


def allocate(jobs: Iterable[Job], units: list[str], instances: dict[str, Instance], price_of: PriceOf,
             file_systems: Iterable[FileSystem] = ()) -> list[Row]:
    """One row per unit and step. ``price_of(instance, attempt)`` is the USD per hour of the instance when the
    attempt ran (an attempt whose instance or price is unknown is counted in time but not in dollars, and its
    row says ``priced`` False). Jobs whose unit is not one of ``units`` are the run's overheads, split evenly."""
    if not units:
        return []
    rows: dict[tuple[str, str], Row] = {}

    def row(unit: str, step: str) -> Row:
        return rows.setdefault((unit, step), Row(unit, step))

    for job in jobs:
        targets = [job.unit] if job.unit in units else list(units)
        part = 1.0 / len(targets)
        cost = lost = vcpu_h = gib_h = 0.0
        priced = True
        types: set[str] = set()
        options: set[str] = set()
        for attempt in job.attempts:
            hours = attempt.hours
            vcpu_h += job.vcpus * hours
            gib_h += job.memory_mib / 1024 * hours
            instance = instances.get(attempt.instance)
            price = price_of(instance, attempt) if instance else None
            if instance:
                types.add(instance.instance_type)
                options.add(instance.purchase_option)
            if instance is None or price is None:
                priced = priced and hours == 0
                continue
            dollars = attempt_cost(job, attempt, instance, price)
            cost += dollars
            if attempt.reclaimed:
                lost += dollars
        for unit in targets:
            r = row(unit, job.step)
            r.attempts += len(job.attempts)
            r.instance_types |= types
            r.purchase_options |= options
            r.vcpu_hours += vcpu_h * part
            r.gib_hours += gib_h * part
            r.cost_usd += cost * part
            r.lost_to_reclaim_usd += lost * part
            r.priced = r.priced and priced
    for fs in file_systems:
        for unit in units:
            row(unit, FSX_STEP).cost_usd += fs.cost / len(units)
    return sorted(rows.values(), key=lambda r: (r.sample, r.step))


def per_unit(rows: Iterable[Row]) -> dict[str, float]:
    """Each unit's cost, every step of it together."""
    out: dict[str, float] = defaultdict(float)
    for r in rows:
        out[r.sample] += r.cost_usd
    return dict(sorted(out.items()))
