"""Joint calling of a synthetic germline cohort by region count: time and peak memory of the region jobs and
of the merge, as the germline DAG's cohort tasks run them (the real step commands, one process per job).

    nice python benchmarks/joint_calling.py --samples 96 --regions 1 4 16 [--depth 15] [--lake DIR]

Setup, not timed: the synthetic reference and ``--samples`` samples sharing planted SNVs
(``genomics_steps.synthetic.write_cohort``), the bwa index, and each sample's bwa_mem and markdup steps (the
BAMs joint calling reads). With ``--lake DIR`` the setup is kept there and reused by the next invocation.

Then, for each region count: the plan (``cohort.plan_document``), every region's ``call-region`` job one
after the other, then the ``merge``. Reported per count: the sum of the region jobs' times (the compute the
array job costs), the slowest region (the array's wall time when every child has a host), the merge's time,
and peak memory (max resident set of a job's tools, from the metrics.json each job writes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from genomics_steps import cohort, layout, synthetic  # noqa: E402

REFERENCE = "bench-ref"
PROJECT = "bench"
VERSION = "1.0"


def _run(lake: Path, module: str, *args: str, **env: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"genomics_steps.{module}", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "include"), "GENOMICS_LAKE_URI": lake.as_uri(),
                               "GENOMICS_PROJECT": PROJECT, "GENOMICS_PIPELINE": "germline", "GENOMICS_VCPUS": "1",
                               **env})
    if done.returncode != 0:
        raise SystemExit(f"{module} {args[:1]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def setup(lake: Path, samples: list[str], depth: int) -> None:
    marker = lake / "bench-setup.json"
    wanted = {"samples": samples, "depth": depth}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"setup: reusing the {len(samples)} mapped samples in {lake}", flush=True)
        return
    started = time.perf_counter()
    synthetic.write_reference(lake.as_uri(), REFERENCE)
    synthetic.write_cohort(lake.as_uri(), PROJECT, REFERENCE, samples, depth=depth)
    _run(lake, "germline", "bwa-index", "--reference", REFERENCE)
    for n, sample in enumerate(samples, 1):
        _run(lake, "germline", "bwa-mem", "--pipeline-version", VERSION, "--reference", REFERENCE,
             GENOMICS_SAMPLE=sample)
        _run(lake, "germline", "markdup", "--pipeline-version", VERSION, "--min-reads", "1000",
             GENOMICS_SAMPLE=sample)
        if n % 16 == 0:
            print(f"setup: {n}/{len(samples)} samples mapped", flush=True)
    marker.write_text(json.dumps(wanted))
    print(f"setup: {len(samples)} samples at {depth}x mapped in {time.perf_counter() - started:.0f} s", flush=True)


def bench(lake: Path, samples: list[str], count: int) -> dict:
    fai = (lake / f"references/{REFERENCE}/index/bwa/genome.fa.fai").read_text()
    plan = cohort.plan_document(samples, cohort.fai_contigs(fai), count, REFERENCE)
    uri = layout.cohort_plan_uri(lake.as_uri(), VERSION, PROJECT, plan["key"])
    Path(uri.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
    Path(uri.removeprefix("file://")).write_text(json.dumps(plan))
    args = ["--pipeline-version", VERSION, "--reference", REFERENCE, "--plan", uri, "--force", "true"]
    times, memory = [], []
    for region in plan["regions"]:
        times.append(_run(lake, "cohort", "call-region", *args, GENOMICS_SAMPLE=region["id"]))
        metrics = cohort.region_prefix(lake.as_uri(), VERSION, PROJECT, plan["key"], region["id"]) + "metrics.json"
        memory.append(json.loads(Path(metrics.removeprefix("file://")).read_text())["peak_memory_mib"])
    merge_seconds = _run(lake, "cohort", "merge", *args)
    prefix = Path(layout.cohort_prefix(lake.as_uri(), VERSION, PROJECT).removeprefix("file://"))
    merged = json.loads((prefix / "metrics.json").read_text())
    return {"regions": len(plan["regions"]), "region_seconds_sum": round(sum(times), 1),
            "slowest_region_seconds": round(max(times), 1), "merge_seconds": round(merge_seconds, 1),
            "region_peak_mib": max(memory), "merge_peak_mib": merged["peak_memory_mib"],
            "sites": merged["metrics"]["sites"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--depth", type=int, default=15, help="read depth of the synthetic samples")
    parser.add_argument("--lake", type=Path, help="keep the mapped samples here and reuse them")
    args = parser.parse_args(argv)
    samples = [f"B{i:03d}" for i in range(1, args.samples + 1)]
    lake = args.lake.resolve() if args.lake else Path(tempfile.mkdtemp(prefix="joint-calling-")) / "lake"
    setup(lake, samples, args.depth)
    rows = [bench(lake, samples, count) for count in args.regions]
    print(f"\n{args.samples} samples at {args.depth}x, 60 kb genome, bcftools mpileup | call -m | norm per region\n")
    print("| regions | region jobs, sum (s) | slowest region (s) | merge (s) | region peak (MiB) | merge peak (MiB) "
          "| sites |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['regions']} | {r['region_seconds_sum']} | {r['slowest_region_seconds']} | {r['merge_seconds']} "
              f"| {r['region_peak_mib']} | {r['merge_peak_mib']} | {r['sites']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
