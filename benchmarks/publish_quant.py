"""Benchmark: publish 1,536 samples' transcript quantification on the local engine.

    ./dev bench publish [--samples 1536] [--transcripts 2000]

Stages salmon-like rows for every sample (one TSV each), then, each case in its own process so peak memory is
its own:
- ``publish``: PublishTableOperator's protocol for transcript_quant (staging table, CTAS + INSERT INTO batches
  of 100 partitions, view swap) on DuckDB;
- ``republish``: the same publish key again (a retried or re-run DAG run): new generation, swap, old one dropped;
- ``pyarrow``: the floor: read the same TSVs with pyarrow and write one Hive-partitioned Snappy dataset,
  no SQL, no catalog, no batching.
Prints a Markdown table for BENCHMARKS.md; the ratios compare cases measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("plugins", "include"):
    sys.path.insert(0, str(ROOT / sub))

HEADER = "transcript_id\tgene_id\tlength\teffective_length\ttpm\tnum_reads\n"


def stage(home: Path, samples: int, transcripts: int) -> list[str]:
    from platform_settings import PlatformSettings
    from publishing import staging_uri

    settings = PlatformSettings(local_home=str(home))
    root = Path(staging_uri(settings.lake_root, "transcript_quant", "rnaseq", "1.0", "bench")[len("file://"):])
    names = [f"SRR{1000000 + i}" for i in range(samples)]
    rng = random.Random(7)
    lengths = [rng.randint(300, 5000) for _ in range(transcripts)]
    for name in names:
        folder = root / f"sample_id={name}"
        folder.mkdir(parents=True)
        lines = [HEADER]
        for t, length in enumerate(lengths):
            tpm = rng.expovariate(1 / 50)
            lines.append(f"ENST{t:08d}\tENSG{t // 3:08d}\t{length}\t{length - 180.5}\t{tpm:.4f}\t{tpm * 3:.3f}\n")
        (folder / "quant.tsv").write_text("".join(lines))
    return names


def run_case(case: str, home: Path, names: list[str]) -> dict:
    start = time.perf_counter()
    if case == "pyarrow":
        import pyarrow.csv as pacsv
        import pyarrow.dataset as pads

        staged = sorted((home / "lake" / "staging").rglob("quant.tsv"))
        out = home / "pyarrow-out"
        for f in staged:  # one sample at a time, as a hand-written publisher would
            table = pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter="\t"))
            sample = f.parent.name.split("=", 1)[1]
            import pyarrow as pa

            table = table.append_column("project", pa.array(["bench"] * table.num_rows))
            table = table.append_column("sample_id", pa.array([sample] * table.num_rows))
            pads.write_dataset(table, out, format="parquet", partitioning=["project", "sample_id"],
                               partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore",
                               basename_template=f"{sample}-{{i}}.parquet",
                               file_options=pads.ParquetFileFormat().make_write_options(compression="snappy"))
        statements = 0
    else:
        from hooks import backend, lake
        from platform_settings import PlatformSettings
        from publishing import Publication, publish_now, staging_uri

        settings = PlatformSettings(local_home=str(home))
        publication = Publication(
            table="transcript_quant", database="genomics", lake_root=settings.lake_root, project="bench",
            pipeline="rnaseq", pipeline_version="1.0", units=names, publish_key="bench/run-1",
            staging=staging_uri(settings.lake_root, "transcript_quant", "rnaseq", "1.0", "bench"),
        )
        summary = publish_now(publication, backend.query_engine(settings), backend.job_state_store(settings),
                              list_files=lambda uri: lake.list_files(settings, uri),
                              delete_prefix=lambda uri: lake.delete_prefix(settings, uri))
        statements = summary["write_statements"]
        _, rows = backend.query_engine(settings).fetch("SELECT count(*) FROM transcript_quant")
        assert rows[0][0] == len(names) * _transcripts(home), rows
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "seconds": round(seconds, 2), "peak_mib": round(peak_mib), "write_statements": statements}


def _transcripts(home: Path) -> int:
    first = next((home / "lake" / "staging").rglob("quant.tsv"))
    return sum(1 for _ in first.open()) - 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--transcripts", type=int, default=2000)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: one case, result as JSON
        home = Path(args.home)
        names = json.loads((home / "names.json").read_text())
        print(json.dumps(run_case(args.case, home, names)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        names = stage(home, args.samples, args.transcripts)
        (home / "names.json").write_text(json.dumps(names))
        staged_mib = sum(f.stat().st_size for f in (home / "lake" / "staging").rglob("*.tsv")) / 2**20
        print(f"staged {len(names)} samples x {args.transcripts} transcripts ({staged_mib:.0f} MiB TSV) "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results = {}
        for case in ("pyarrow", "publish", "republish"):
            out = subprocess.run([sys.executable, __file__, "--case", "publish" if case == "republish" else case,
                                  "--home", str(home)], capture_output=True, text=True, check=True)
            results[case] = json.loads(out.stdout.strip().splitlines()[-1])
        parquet_mib = sum(f.stat().st_size for f in (home / "lake" / "tables").rglob("*.parquet")) / 2**20
    rows = args.samples * args.transcripts
    base = results["pyarrow"]
    print(f"\n{args.samples} samples x {args.transcripts} transcripts = {rows:,} rows; "
          f"published Parquet {parquet_mib:.0f} MiB\n")
    print("| case | write statements | wall time | vs pyarrow | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for case, label in (("pyarrow", "pyarrow, direct partitioned write (floor)"),
                        ("publish", "publish (DuckDB: CTAS + INSERT INTO, view swap)"),
                        ("republish", "re-publish same key (new generation, old dropped)")):
        r = results[case]
        print(f"| {label} | {r['write_statements'] or '-'} | {r['seconds']:.1f} s | "
              f"{r['seconds'] / base['seconds']:.2f}x | {r['peak_mib']} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
