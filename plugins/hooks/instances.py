"""What a Batch job ran on: its attempts' container instances resolved to EC2 instance type, purchase option
(Spot or on-demand), availability zone and capacity.

A Batch event's ``attempts[].container.containerInstanceArn`` names an ECS container instance; its ARN
(``arn:aws:ecs:<region>:<account>:container-instance/<cluster>/<id>``) embeds the compute environment's ECS
cluster. Resolving goes ECS DescribeContainerInstances (up to 100 a call, per cluster) -> EC2 DescribeInstances
(type, ``InstanceLifecycle`` "spot", placement zone) -> EC2 DescribeInstanceTypes (vCPUs, memory; per type).
Each instance is resolved once and kept in the job-state store (``get_instance``/``put_instance``), and each
type's capacity too, so a run's jobs cost one lookup per new instance, never one per job. Jobs are resolved
when they end, while their instances still exist (ECS forgets a deregistered instance after about an hour).

The local backend has one instance, this machine: type ``local``, its capacity from the settings (or the
machine's), priced at ``local_price_per_hour``.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from typing import Any, Iterable

from costs import LOCAL, ON_DEMAND, SPOT, Instance

BATCH = 100  # DescribeContainerInstances, DescribeInstances and DescribeInstanceTypes ids per call
LOCAL_INSTANCE = "local"
# arn:aws:ecs:<region>:<account>:container-instance/<cluster>/<id>; the old format had no cluster part
CONTAINER_INSTANCE_ARN = re.compile(
    r"arn:aws[a-z-]*:ecs:([a-z0-9-]+):([0-9x*]{12}):container-instance/([A-Za-z0-9_-]{1,255})/([A-Za-z0-9-]{1,64})")


def cluster_of(arn: str) -> str | None:
    """The ECS cluster a container instance ARN names, or None for an ARN without one."""
    m = CONTAINER_INSTANCE_ARN.fullmatch(arn or "")
    return m.group(3) if m else None


def local_instance(vcpus: int = 0, memory_mib: int = 0) -> Instance:
    """This machine as the local backend's one instance."""
    if not memory_mib:
        try:
            memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        except (ValueError, OSError):
            memory_mib = 1024
    return Instance(LOCAL, LOCAL, LOCAL, float(vcpus or os.cpu_count() or 1), float(memory_mib))


class InstanceLookup:
    """Resolve container instance ARNs to ``costs.Instance``, batched and cached; ``calls`` counts the AWS calls
    by operation (for the benchmark's calls-per-job figure)."""

    def __init__(self, ecs: Any, ec2: Any, store: Any):
        self.ecs, self.ec2, self.store = ecs, ec2, store
        self.calls: Counter[str] = Counter()

    def resolve(self, arns: Iterable[str]) -> dict[str, Instance]:
        """Every ARN that could be resolved (unknown, old-format or vanished instances are left out)."""
        wanted = sorted({a for a in arns if a and cluster_of(a)})
        out: dict[str, Instance] = {}
        missing: dict[str, list[str]] = defaultdict(list)
        for arn in wanted:
            cached = self.store.get_instance(arn)
            if cached:
                out[arn] = Instance(**cached)
            else:
                missing[cluster_of(arn)].append(arn)
        ec2_ids: dict[str, str] = {}
        for cluster, arns_of in missing.items():
            for start in range(0, len(arns_of), BATCH):
                self.calls["ecs:DescribeContainerInstances"] += 1
                page = self.ecs.describe_container_instances(cluster=cluster,
                                                             containerInstances=arns_of[start:start + BATCH])
                for ci in page.get("containerInstances", []):
                    if ci.get("ec2InstanceId"):
                        ec2_ids[ci["containerInstanceArn"]] = ci["ec2InstanceId"]
        ec2 = self._describe_instances(sorted(set(ec2_ids.values())))
        capacity = self._capacity({i["InstanceType"] for i in ec2.values()})
        for arn, instance_id in ec2_ids.items():
            described = ec2.get(instance_id)
            if not described or described["InstanceType"] not in capacity:
                continue
            vcpus, memory_mib = capacity[described["InstanceType"]]
            instance = Instance(described["InstanceType"],
                                SPOT if described.get("InstanceLifecycle") == "spot" else ON_DEMAND,
                                described.get("Placement", {}).get("AvailabilityZone", ""), vcpus, memory_mib)
            self.store.put_instance(arn, instance.__dict__)
            out[arn] = instance
        return out

    def _describe_instances(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), BATCH):
            self.calls["ec2:DescribeInstances"] += 1
            page = self.ec2.describe_instances(InstanceIds=ids[start:start + BATCH])
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    out[inst["InstanceId"]] = inst
        return out

    def _capacity(self, types: set[str]) -> dict[str, tuple[float, float]]:
        """(vCPUs, memory MiB) of each instance type, from the store or one DescribeInstanceTypes per 100."""
        out: dict[str, tuple[float, float]] = {}
        unknown = []
        for t in sorted(types):
            cached = self.store.get_instance(f"type#{t}")
            if cached:
                out[t] = (cached["vcpus"], cached["memory_mib"])
            else:
                unknown.append(t)
        for start in range(0, len(unknown), BATCH):
            self.calls["ec2:DescribeInstanceTypes"] += 1
            page = self.ec2.describe_instance_types(InstanceTypes=unknown[start:start + BATCH])
            for it in page.get("InstanceTypes", []):
                vcpus = float(it["VCpuInfo"]["DefaultVCpus"])
                memory_mib = float(it["MemoryInfo"]["SizeInMiB"])
                self.store.put_instance(f"type#{it['InstanceType']}", {"vcpus": vcpus, "memory_mib": memory_mib})
                out[it["InstanceType"]] = (vcpus, memory_mib)
        return out
