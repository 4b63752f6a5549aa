"""Time and peak memory of building the rnaseq count matrices (genomics_steps.matrices) at flow-cell scale.

    python benchmarks/matrices.py --samples 1536 --genes 60000 --isoforms 2

Makes one synthetic salmon quant.sf per sample (the same transcripts in every sample, random TPM and reads;
it is only text to parse, kept in memory so the lake is not what is measured), then runs ``summarize`` and
``write`` as the merge job does, in a child process whose peak RSS (ru_maxrss) is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from genomics_steps import matrices

n, genes, isoforms, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
names = [f"G{g:06d}-T{i}" for g in range(genes) for i in range(isoforms)]
tx2gene = {name: name.split("-")[0] for name in names}
rng = np.random.default_rng(7)
lengths = rng.integers(300, 5000, len(names)).astype(float)

def quant(sample: str) -> str:
    r = np.random.default_rng(int(sample[1:]))
    tpm = r.lognormal(0, 2, len(names)) * (r.random(len(names)) > 0.3)
    tpm = tpm / tpm.sum() * 1e6
    reads = tpm * lengths / 1000
    body = "".join(f"{t}\t{int(e) + 20}\t{e:.1f}\t{a:.6f}\t{c:.3f}\n" for t, e, a, c in zip(names, lengths, tpm, reads))
    return "Name\tLength\tEffectiveLength\tTPM\tNumReads\n" + body

samples = [f"S{i:04d}" for i in range(n)]
start = time.perf_counter()
made = 0.0
def timed_quant(sample):
    global made
    t = time.perf_counter(); text = quant(sample); made += time.perf_counter() - t
    return text
summary = matrices.summarize(samples, timed_quant, tx2gene, work)
summarized = time.perf_counter() - start - made
out = work / "out"; out.mkdir()
t = time.perf_counter()
written = matrices.write(summary, out)
wrote = time.perf_counter() - t
print(json.dumps({"summarize_s": round(summarized, 1), "write_s": round(wrote, 1), "making_input_s": round(made, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "bytes": {k: v.stat().st_size for k, v in written.items()},
                  "work_disk_mib": round(sum(p.stat().st_size for p in work.glob("*.npy")) / 2**20)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1536)
    parser.add_argument("--genes", type=int, default=60000)
    parser.add_argument("--isoforms", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.samples), str(args.genes), str(args.isoforms),
                              work], env={"PYTHONPATH": str(ROOT / "include")}, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result.update(samples=args.samples, genes=args.genes, transcripts=args.genes * args.isoforms)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
