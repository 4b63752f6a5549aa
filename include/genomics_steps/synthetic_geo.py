"""Fill the LOCAL STAND-IN for NCBI GEO and SRA (hooks.ncbi_mirror) with synthetic series, made here.

    python -m genomics_steps.synthetic_geo --mirror DIR --from 2026-11-16 --to 2026-11-18

Every day of the range gets one or two RNA-seq series of Homo sapiens, fixed by the date (rerunning writes
the same mirror). Their samples are real SRA archives: reads simulated from the synthetic-v1 transcriptome
(genomics_steps.synthetic), loaded with sra-toolkit's latf-load and packed with kar, so the download step's
fasterq-dump reads them as it reads NCBI's. Among them, on purpose:
- a sample sequenced in two runs (the download joins them);
- on days with two series, a sample of very low base quality (QC fails it);
- a single-end sample (one read per spot: fasterq-dump gives it one file, ingestion writes R1 only);
- on days with two series, a second series like recent real ones (GSE292461 in shared/real-data/eutils): its
  document has ``"extrelations": []`` and only its ``bioproject``, so its runs are found through the BioProject.
Every series has a BioProject and every experiment names it (``<Bioproject>`` in its expxml), as NCBI's do.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

from genomics_steps.synthetic import rnaseq_sample

REFERENCE = "synthetic-v1"
README = """THIS IS NOT NCBI. A local stand-in for NCBI GEO (E-utilities) and SRA, made by
genomics_steps.synthetic_geo from synthetic reads, so geo_ingestion runs end to end without a network.
gds/ and sra/ hold E-utilities esummary documents; sra-archives/ holds SRA archives built with latf-load + kar.
On the aws backend geo_ingestion talks to the real NCBI instead.
"""


def series_of_day(day: date) -> list[dict]:
    """The series published on ``day``: accessions and sample plan, fixed by the date."""
    n = day.toordinal() - date(2026, 1, 1).toordinal() + 1000
    series = []
    for k in range(1 + n % 2):
        samples = []
        for j in range(3 if k == 0 else 2):
            samples.append({
                "gsm": f"GSM{n * 100 + k * 10 + j}",
                "runs": 2 if (k == 0 and j == 0) else 1,
                "quality": "#" if (k == 1 and j == 1) else "I",
                "layout": "SINGLE" if (k == 0 and j == 2) else "PAIRED",
            })
        series.append({"gse": f"GSE{n * 10 + k}", "srp": f"SRP{n * 10 + k}", "bioproject": f"PRJNA{n * 10 + k}",
                       "sra_link": k == 0, "samples": samples, "day": day})
    return series


def _gds_document(s: dict) -> dict:
    number = s["gse"][3:]
    return {
        "uid": f"200{number}", "accession": s["gse"], "gds": "", "entrytype": "GSE",
        "title": f"Synthetic RNA-seq series {s['gse']}", "summary": "Reads simulated from the synthetic-v1 "
        "transcriptome (local stand-in for GEO).", "gpl": "24676", "gse": number, "taxon": "Homo sapiens",
        "gdstype": "Expression profiling by high throughput sequencing", "pdat": s["day"].strftime("%Y/%m/%d"),
        "suppfile": "", "n_samples": len(s["samples"]),
        "samples": [{"accession": x["gsm"], "title": f"{x['gsm']} synthetic sample"} for x in s["samples"]],
        "relations": [], "bioproject": s["bioproject"],
        "extrelations": [{"relationtype": "SRA", "targetobject": s["srp"], "targetftplink": ""}]
        if s["sra_link"] else [],
    }


def _sra_document(s: dict, sample: dict, runs: list[tuple[str, int, int]]) -> dict:
    srx = "SRX" + sample["gsm"][3:]
    run_xml = "".join(f'<Run acc="{acc}" total_spots="{spots}" total_bases="{bases}" load_done="true" '
                      f'is_public="true" cluster_name="public" static_data_available="true"/>'
                      for acc, spots, bases in runs)
    expxml = (f'<Summary><Title>{sample["gsm"]}: synthetic sample; Homo sapiens; RNA-Seq</Title>'
              f'<Platform instrument_model="Illumina NovaSeq 6000">ILLUMINA</Platform></Summary>'
              f'<Experiment acc="{srx}" ver="1" status="public" name="{sample["gsm"]}: synthetic sample; '
              f'Homo sapiens; RNA-Seq"/><Study acc="{s["srp"]}" name="{s["gse"]}"/>'
              f'<Organism taxid="9606" ScientificName="Homo sapiens"/><Sample acc="SRS{sample["gsm"][3:]}" name=""/>'
              f'<Library_descriptor><LIBRARY_NAME>{sample["gsm"]}</LIBRARY_NAME>'
              f'<LIBRARY_STRATEGY>RNA-Seq</LIBRARY_STRATEGY><LIBRARY_SOURCE>TRANSCRIPTOMIC</LIBRARY_SOURCE>'
              f'<LIBRARY_SELECTION>cDNA</LIBRARY_SELECTION><LIBRARY_LAYOUT><{sample["layout"]}/></LIBRARY_LAYOUT>'
              f'</Library_descriptor><Bioproject>{s["bioproject"]}</Bioproject>'
              f'<Biosample>SAMN{sample["gsm"][3:]}</Biosample>')
    return {"uid": srx[3:], "expxml": expxml, "runs": run_xml, "extra": "",
            "createdate": s["day"].strftime("%Y/%m/%d"), "updatedate": s["day"].strftime("%Y/%m/%d")}


def _archive(path: Path, reads: list[tuple[str, str]], quality: str, name: str, paired: bool) -> None:
    """An SRA archive of ``reads`` (pairs): FASTQ -> latf-load -> kar, in a scratch directory."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = []
        for mate in (1, 2) if paired else (1,):
            fq = work / f"{name}_{mate}.fastq"
            with fq.open("w") as fh:
                for i, pair in enumerate(reads, 1):
                    seq = pair[mate - 1]
                    fh.write(f"@{name}.{i}/{mate}\n{seq}\n+\n{quality * len(seq)}\n")
            files.append(str(fq))
        subprocess.run(["latf-load", "--platform", "ILLUMINA", "--quality", "PHRED_33", "--output",
                        str(work / "db"), *files], check=True, capture_output=True, cwd=work)
        tmp_archive = path.with_name(f".{path.name}.tmp")
        subprocess.run(["kar", "--force", "--create", str(tmp_archive), "--directory", str(work / "db")],
                       check=True, capture_output=True, cwd=work)
        tmp_archive.replace(path)


def _pairs(gz_r1: bytes, gz_r2: bytes) -> list[tuple[str, str]]:
    r1 = gzip.decompress(gz_r1).decode().splitlines()[1::4]
    r2 = gzip.decompress(gz_r2).decode().splitlines()[1::4]
    return list(zip(r1, r2))


def write_mirror(mirror: Path, first: date, last: date, fragments: int = 3000) -> list[str]:
    """Write every series published from ``first`` to ``last``; returns their accessions."""
    for tool in ("latf-load", "kar"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is missing: install the Debian package sra-toolkit (./dev does)")
    for folder in ("gds", "sra", "sra-archives"):
        (mirror / folder).mkdir(parents=True, exist_ok=True)
    (mirror / "README.txt").write_text(README)
    written = []
    day = first
    while day <= last:
        for s in series_of_day(day):
            for sample in s["samples"]:
                r1, r2, _ = rnaseq_sample(REFERENCE, sample["gsm"], fragments)
                pairs = _pairs(r1, r2)
                per_run = -(-len(pairs) // sample["runs"])
                runs = []
                for r in range(sample["runs"]):
                    acc = f"SRR{sample['gsm'][3:]}{r}"
                    chunk = pairs[r * per_run : (r + 1) * per_run]
                    archive = mirror / "sra-archives" / f"{acc}.sra"
                    if not archive.exists():
                        _archive(archive, chunk, sample["quality"], acc, sample["layout"] == "PAIRED")
                    paired = sample["layout"] == "PAIRED"
                    runs.append((acc, len(chunk), sum(len(a) + (len(b) if paired else 0) for a, b in chunk)))
                doc = _sra_document(s, sample, runs)
                (mirror / "sra" / f"SRX{sample['gsm'][3:]}.json").write_text(json.dumps(doc, indent=1))
            (mirror / "gds" / f"{s['gse']}.json").write_text(json.dumps(_gds_document(s), indent=1, default=str))
            written.append(s["gse"])
        day += timedelta(days=1)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", required=True, type=Path)
    parser.add_argument("--from", dest="first", required=True, type=date.fromisoformat)
    parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat)
    parser.add_argument("--fragments", type=int, default=3000, help="read pairs per sample")
    args = parser.parse_args(argv)
    written = write_mirror(args.mirror, args.first, args.last, args.fragments)
    print(f"local NCBI stand-in at {args.mirror}: {len(written)} series ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
