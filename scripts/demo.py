"""The README's main command: run batch_events_demo end to end on the local backend and show what it made.

Run through ./dev demo (which installs everything and prepares Airflow first). It ends by querying the
published tables by name on the local engine, as ./dev sql does. Extra arguments are passed on as
run config, for example: ./dev demo --samples S1 S2 S3 --reads 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", nargs="+", default=["S001", "S002", "S003", "S004", "S005", "S006"])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--project", default="demo")
    args = parser.parse_args()
    conf = {"samples": args.samples, "reads": args.reads, "project": args.project}
    os.environ.setdefault("GENOMICS_BACKEND", "local")
    print(f"==> airflow dags test batch_events_demo (backend: {os.environ['GENOMICS_BACKEND']}, conf {json.dumps(conf)})")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "batch_events_demo", "--conf", json.dumps(conf)],
        capture_output=True, text=True,
    )
    log_path = ROOT / ".airflow" / "demo-run.log"
    log_path.write_text(proc.stdout + proc.stderr)
    state = _last_run_state()
    if proc.returncode != 0 or state != "success":
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        print(f"the DAG run ended {state}; full output in {log_path}")
        return 1
    print(f"==> DAG run succeeded (full Airflow output in {log_path})")

    from local_batch.control_plane import ControlPlane
    from platform_settings import PlatformSettings

    settings = PlatformSettings.resolve(use_airflow_variable=False)
    lake = Path(settings.local_home) / "lake" / "read_stats" / f"project={args.project}"
    print(f"==> read statistics in the lake ({lake})")
    print(f"  {'sample':<10} {'reads':>6} {'mean length':>12} {'GC':>6}")
    for sample in args.samples:
        stats = json.loads((lake / f"sample={sample}" / "stats.json").read_text())
        print(f"  {sample:<10} {stats['reads']:>6} {stats['mean_length']:>12.1f} {stats['gc_fraction']:>6.3f}")
    counts = ControlPlane(settings.local_home).counts()
    print(f"==> local Batch control plane, jobs by state (all runs so far): {counts}")

    from sql import show

    for title, query in PUBLISHED_QUERIES:
        print(f"==> {title}\n    ./dev sql \"{query}\"")
        show(query)
    return 0


# What the README shows: the published tables, queried by name with the same SQL Athena would run.
PUBLISHED_QUERIES = [
    ("published QC metrics (table genomics.qc_metrics, Snappy Parquet)",
     "SELECT sample_id, metric, value, pipeline_version FROM qc_metrics WHERE metric = 'gc_fraction' "
     "ORDER BY sample_id"),
    ("compute per sample (table genomics.job_runs)",
     "SELECT sample_id, count(*) AS jobs, sum(attempts) AS attempts, round(sum(vcpu_hours) * 3600, 1) AS "
     "vcpu_seconds FROM job_runs GROUP BY sample_id ORDER BY sample_id"),
]


def _last_run_state() -> str | None:
    """State of the newest batch_events_demo run, from Airflow itself (`dags test` may exit 0 on a failed run)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "dags", "list-runs", "batch_events_demo", "-o", "json"],
        capture_output=True, text=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]  # warnings may precede the JSON
    try:
        runs = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return None
    runs.sort(key=lambda r: r.get("start_date") or "", reverse=True)
    return runs[0]["state"] if runs else None


if __name__ == "__main__":
    sys.exit(main())
