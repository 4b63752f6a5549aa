"""Command line for the local Batch runner.

    python -m local_batch.cli serve   [--home DIR]   run the daemon in the foreground
    python -m local_batch.cli status  [--home DIR]   is it running, and how many jobs are in each state
    python -m local_batch.cli stop    [--home DIR]
    python -m local_batch.cli reclaim JOB_ID         fault injection: take the host away from a running attempt
"""

from __future__ import annotations

import argparse
import json
import logging

from local_batch.control_plane import ControlPlane
from local_batch.runner import Runner, runner_running, stop_runner
from platform_settings import PlatformSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_batch.cli")
    parser.add_argument("command", choices=["serve", "status", "stop", "reclaim"])
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--home")
    parser.add_argument("--vcpus", type=int, default=0)
    parser.add_argument("--memory-mib", type=int, default=0)
    parser.add_argument("--idle-exit-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    home = args.home or PlatformSettings.resolve(use_airflow_variable=False).local_home

    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        Runner(home, args.vcpus, args.memory_mib).serve(idle_exit_seconds=args.idle_exit_seconds)
    elif args.command == "status":
        plane = ControlPlane(home)
        print(json.dumps({"home": home, "running": runner_running(home), "jobs": plane.counts()}, indent=2))
    elif args.command == "stop":
        print("stopped" if stop_runner(home) else "not running")
    elif args.command == "reclaim":
        if not args.job_id:
            parser.error("reclaim needs a JOB_ID")
        ok = ControlPlane(home).reclaim(args.job_id)
        print("reclaimed" if ok else f"job {args.job_id} is not running")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
