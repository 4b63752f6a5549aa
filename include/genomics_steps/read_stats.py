"""Demo step: simulate a sample's reads deterministically and publish read statistics to the lake.

    python -m genomics_steps.read_stats --reads N [--pipeline-version V] [--fail-sample S]

Writes <lake>/read_stats/project=<p>/sample=<s>/stats.json: read count, mean length, GC fraction, and stages
the same numbers as qc_metrics rows for publishing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys

from genomics_steps.runtime import argument_problems, current_sample, staging_uri, write_uri


def simulate_reads(sample: str, count: int) -> list[str]:
    rng = random.Random(int(hashlib.sha256(sample.encode()).hexdigest()[:12], 16))
    gc = 0.35 + 0.3 * rng.random()  # each sample has its own GC content
    weights = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return ["".join(rng.choices("ACGT", weights, k=rng.randint(90, 150))) for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--pipeline-version", default="1")
    parser.add_argument("--fail-sample", default="", help="exit 2 for this sample (to show failure handling)")
    args = parser.parse_args(argv)
    problems = argument_problems(args)
    if problems:
        print("read_stats refused its arguments:\n - " + "\n - ".join(problems), file=sys.stderr)
        return 64  # EX_USAGE
    sample = current_sample()
    print(f"sample {sample}: job {os.environ.get('AWS_BATCH_JOB_ID')} attempt {os.environ.get('AWS_BATCH_JOB_ATTEMPT')}")
    if sample == args.fail_sample:
        print(f"error: refusing sample {sample} as asked by --fail-sample", file=sys.stderr)
        return 2
    reads = simulate_reads(sample, args.reads)
    bases = sum(len(r) for r in reads)
    stats = {
        "sample": sample,
        "reads": len(reads),
        "mean_length": bases / len(reads),
        "gc_fraction": sum(r.count("G") + r.count("C") for r in reads) / bases,
    }
    project = os.environ.get("GENOMICS_PROJECT", "default")
    uri = f"{os.environ['GENOMICS_LAKE_URI']}/read_stats/project={project}/sample={sample}/stats.json"
    write_uri(uri, json.dumps(stats).encode())
    staged = staging_uri("qc_metrics", args.pipeline_version) + f"sample_id={sample}/read_stats.tsv"
    rows = "".join(f"read_stats\t{name}\t{stats[name]}\n" for name in ("reads", "mean_length", "gc_fraction"))
    write_uri(staged, ("tool\tmetric\tvalue\n" + rows).encode())
    print(json.dumps(stats))
    print(f"wrote {uri} and {staged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
