"""A stand-in for the AWS Price List API's GetProducts (moto has no ``pricing`` service).

It holds EC2 products the way the Price List does: one product per combination of instance type, region,
operating system, tenancy, pre-installed software and capacity status, each with its own on-demand price, and
answers ``get_products`` with every product matching all TERM_MATCH filters, as JSON text in ``PriceList``
(the API's shape: ``product.attributes`` and ``terms.OnDemand.<sku>.<term>.priceDimensions``). So a caller that
filters too loosely gets several products back, as it would from AWS.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

# what the other variants of a Linux on-demand product cost relative to it (Windows licence, dedicated host...)
VARIANTS = {
    "operatingSystem": {"Linux": 1.0, "Windows": 1.9, "RHEL": 1.3},
    "tenancy": {"Shared": 1.0, "Dedicated": 1.1},
    "preInstalledSw": {"NA": 1.0, "SQL Std": 2.5},
    "capacitystatus": {"Used": 1.0, "UnusedCapacityReservation": 1.0, "AllocatedCapacityReservation": 1.0},
}


class PriceListDouble:
    def __init__(self, linux_prices: dict[tuple[str, str], float]):
        """``linux_prices``: (instance type, region code) -> USD per hour of Linux, shared, no software."""
        self.products: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        for (instance_type, region), usd in linux_prices.items():
            for combo in itertools.product(*(d.items() for d in VARIANTS.values())):
                attributes = {"instanceType": instance_type, "regionCode": region, "servicecode": "AmazonEC2"}
                factor = 1.0
                for name, (value, f) in zip(VARIANTS, combo):
                    attributes[name] = value
                    factor *= f
                sku = f"SKU{len(self.products):06d}"
                self.products.append({
                    "product": {"sku": sku, "productFamily": "Compute Instance", "attributes": attributes},
                    "serviceCode": "AmazonEC2",
                    "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {"sku": sku, "priceDimensions": {
                        f"{sku}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "description": "On Demand",
                                                         "pricePerUnit": {"USD": f"{usd * factor:.10f}"}}}}}},
                })

    def get_products(self, *, ServiceCode: str, Filters: list[dict[str, str]] = (), MaxResults: int = 100,
                     **_: Any) -> dict[str, Any]:
        self.calls.append({"ServiceCode": ServiceCode, "Filters": list(Filters)})
        for f in Filters:
            if f.get("Type") != "TERM_MATCH":
                raise ValueError(f"unsupported filter type {f.get('Type')!r}")
        found = [p for p in self.products if p["serviceCode"] == ServiceCode and all(
            p["product"]["attributes"].get(f["Field"]) == f["Value"] for f in Filters)]
        return {"PriceList": [json.dumps(p) for p in found[:MaxResults]], "FormatVersion": "aws_v1"}
