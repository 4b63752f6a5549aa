"""Prices for cost per sample: USD per instance-hour (on-demand, Spot, local) and per FSx GiB-month.

- on-demand: the AWS Price List API (``pricing:GetProducts``, served from us-east-1), filtered to one product:
  the instance type in the region, Linux, shared tenancy, no pre-installed software, capacity status Used;
- Spot: EC2 ``DescribeSpotPriceHistory`` for the instance type and zone over the UTC day the attempt started
  (Linux/UNIX); the day's mean;
- local: the ``local_price_per_hour`` setting (default 0: this machine is already paid for);
- FSx for Lustre and any price the APIs cannot give: the offline price file include/prices/aws_prices.json
  (dated, documented in its ``note``). ``price_source`` "offline" uses only that file (tests, or a deployment
  whose role may not call the Price List API); a Spot price it lacks falls back to on-demand, an upper bound.
  An API that refuses (no right, no endpoint) falls back to the same file, with a warning.

Every price looked up is cached in the lake per UTC day (``<lake>/costs/prices/day=<YYYY-MM-DD>/<region>.json``),
so a run's costs ask each API once per instance type (and zone) per day. ``calls`` counts the API calls.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from costs import LOCAL, ON_DEMAND, SPOT, Instance
from platform_settings import REPO_ROOT, PlatformSettings

OFFLINE_PRICE_FILE = REPO_ROOT / "include" / "prices" / "aws_prices.json"
PRICE_LIST_REGION = "us-east-1"
PRICE_SOURCES = ("api", "offline")
log = logging.getLogger(__name__)


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def offline_prices(path: Path = OFFLINE_PRICE_FILE) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def on_demand_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """The GetProducts filters that leave exactly one EC2 product: ``instance_type`` in ``region`` as Batch
    runs it (Linux, shared tenancy, no licensed software, capacity actually used, not a reservation)."""
    wanted = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
              "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


def hourly_usd_of_product(price_item: str | dict[str, Any]) -> float:
    """The on-demand USD per hour of one Price List product document (GetProducts returns them as JSON text)."""
    product = json.loads(price_item) if isinstance(price_item, str) else price_item
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") == "Hrs" and "USD" in dimension.get("pricePerUnit", {}):
                return float(dimension["pricePerUnit"]["USD"])
    raise ValueError("the Price List product has no on-demand hourly USD price")


class PriceBook:
    """Hourly prices for the instances of a run's attempts. Build it in a task (it may call AWS), ask
    ``hourly``, then ``save`` the day caches it filled."""

    def __init__(self, settings: PlatformSettings, *, pricing: Any = None, ec2: Any = None,
                 offline: dict[str, Any] | None = None):
        if settings.price_source not in PRICE_SOURCES:
            raise ValueError(f"price_source must be one of {PRICE_SOURCES}, got {settings.price_source!r}")
        self.settings = settings
        self.region = settings.region_name or PRICE_LIST_REGION
        self._pricing, self._ec2 = pricing, ec2
        self.offline = offline if offline is not None else offline_prices()
        self.calls: Counter[str] = Counter()
        self._days: dict[str, dict[str, float]] = {}
        self._dirty: set[str] = set()

    # --- what callers ask ---------------------------------------------------------------------------------
    def hourly(self, instance: Instance, started_ms: int) -> float | None:
        """USD per hour of ``instance`` on the day ``started_ms`` falls in; None if no source knows it."""
        if instance.purchase_option == LOCAL:
            return float(self.settings.local_price_per_hour)
        day = day_of(started_ms)
        if instance.purchase_option == SPOT:
            price = self._cached(day, f"spot:{instance.instance_type}:{instance.zone}",
                                 lambda: self._spot(instance, day))
            if price is not None:
                return price
        if instance.purchase_option in (SPOT, ON_DEMAND):
            return self._cached(day, f"on_demand:{instance.instance_type}",
                                lambda: self._on_demand(instance.instance_type))
        return None

    def fsx_per_gib_month(self, deployment_type: str, throughput: int | None = None) -> float | None:
        table = self.offline.get("fsx_lustre_per_gib_month", {})
        key = deployment_type if deployment_type.startswith("SCRATCH") else f"{deployment_type}:{throughput}"
        return table.get(key)

    def save(self) -> None:
        """Write back each day's cache that gained prices."""
        from hooks.lake import write_text

        for day in sorted(self._dirty):
            write_text(self.settings, self._cache_uri(day), json.dumps(self._days[day], sort_keys=True, indent=1))
        self._dirty.clear()

    # --- sources ------------------------------------------------------------------------------------------
    def _cached(self, day: str, key: str, look_up) -> float | None:
        prices = self._day(day)
        if key not in prices:
            price = look_up()
            if price is None:
                return None
            prices[key] = price
            self._dirty.add(day)
        return prices[key]

    def _day(self, day: str) -> dict[str, float]:
        if day not in self._days:
            from hooks.lake import read_head

            try:
                self._days[day] = json.loads(read_head(self.settings, self._cache_uri(day), 1 << 22))
            except FileNotFoundError:
                self._days[day] = {}
        return self._days[day]

    def _cache_uri(self, day: str) -> str:
        return f"{self.settings.lake_root.rstrip('/')}/costs/prices/day={day}/{self.region}.json"

    def _on_demand(self, instance_type: str) -> float | None:
        if self.settings.price_source == "api":
            self.calls["pricing:GetProducts"] += 1
            try:
                page = self._pricing_client().get_products(
                    ServiceCode="AmazonEC2", Filters=on_demand_filters(instance_type, self.region), MaxResults=10)
            except Exception as exc:  # no right, no endpoint: the offline file is the documented fallback
                log.warning("Price List API refused %s (%s): using the offline price file", instance_type, exc)
                page = {}
            items = page.get("PriceList", [])
            if len(items) == 1:
                return hourly_usd_of_product(items[0])
        return self.offline.get("on_demand_per_hour", {}).get(instance_type)

    def _spot(self, instance: Instance, day: str) -> float | None:
        if self.settings.price_source == "api":
            start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            self.calls["ec2:DescribeSpotPriceHistory"] += 1
            points: list[float] = []
            paginator = self._ec2_client().get_paginator("describe_spot_price_history")
            try:
                for page in paginator.paginate(InstanceTypes=[instance.instance_type],
                                               AvailabilityZone=instance.zone, ProductDescriptions=["Linux/UNIX"],
                                               StartTime=start, EndTime=start + timedelta(days=1)):
                    points += [float(p["SpotPrice"]) for p in page.get("SpotPriceHistory", [])
                               if p.get("AvailabilityZone") == instance.zone]
            except Exception as exc:
                log.warning("Spot price history refused %s in %s (%s)", instance.instance_type, instance.zone, exc)
            if points:
                return statistics.fmean(points)
        return self.offline.get("spot_per_hour", {}).get(f"{instance.instance_type}:{instance.zone}")

    def _pricing_client(self) -> Any:
        if self._pricing is None:
            from hooks.aws_clients import aws_client

            self._pricing = aws_client(replace(self.settings, region_name=PRICE_LIST_REGION), "pricing")
        return self._pricing

    def _ec2_client(self) -> Any:
        if self._ec2 is None:
            from hooks.aws_clients import aws_client

            self._ec2 = aws_client(self.settings, "ec2")
        return self._ec2
