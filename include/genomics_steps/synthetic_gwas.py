"""A tiny synthetic GWAS cohort with planted causal variants, for the demo and the tests.

    python -m genomics_steps.synthetic_gwas --lake URI --project P [--samples 600]

Writes, deterministic from the project name, under ``<lake>/raw/<P>/gwas/``:
- ``cohort.bed``, ``cohort.bim``, ``cohort.fam``: PLINK 1 genotypes (SNP-major .bed) of N samples at
  2,500 variants on chromosomes 1 and 2, allele frequencies 0.05-0.5, in Hardy-Weinberg equilibrium;
- ``phenotypes.tsv``: FID IID trait_a trait_b (quantitative); each trait is a planted causal variant's effect
  plus the covariates' effects plus noise, trait_b with a few values missing (NA);
- ``covariates.tsv``: FID IID age sex;
and ``<lake>/truth/<P>/gwas.json``: the causal variant of each trait, which the science check expects to rank
first. Pure Python (no numpy), like the rest of the step package.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

from genomics_steps.runtime import write_uri

CHROMOSOMES = {"1": 1500, "2": 1000}  # variants per chromosome
SPACING = 1000  # bp between variants
CAUSAL = {"trait_a": ("1", 700, 0.45), "trait_b": ("2", 300, 0.40)}  # chromosome, variant index, effect (SD)
BED_CODE = {2: 0b00, 1: 0b10, 0: 0b11}  # copies of allele 1 (the .bim's 5th column) -> 2-bit code


def variant_id(chrom: str, index: int) -> str:
    return f"rs{chrom}_{index + 1:05d}"


def cohort(project: str, samples: int = 600) -> dict:
    """Genotypes (variant -> list of allele-1 counts), phenotypes, covariates and the truth."""
    rng = random.Random(f"gwas:{project}")
    ids = [f"S{i + 1:04d}" for i in range(samples)]
    variants = []  # (chrom, pos, id, a1, a2, counts)
    for chrom, count in CHROMOSOMES.items():
        for i in range(count):
            freq = rng.uniform(0.05, 0.5)
            counts = [(rng.random() < freq) + (rng.random() < freq) for _ in ids]
            a1, a2 = rng.sample("ACGT", 2)
            variants.append((chrom, 10_000 + i * SPACING, variant_id(chrom, i), a1, a2, counts))
    age = [rng.uniform(20, 80) for _ in ids]
    sex = [rng.randint(0, 1) for _ in ids]
    traits: dict[str, list[float | None]] = {}
    by_id = {v[2]: v for v in variants}
    for trait, (chrom, index, effect) in CAUSAL.items():
        counts = by_id[variant_id(chrom, index)][5]
        mean = sum(counts) / len(counts)
        sd = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) or 1.0
        traits[trait] = [effect * (c - mean) / sd + 0.01 * (a - 50) + 0.3 * s + rng.gauss(0, 1)
                         for c, a, s in zip(counts, age, sex)]
    for i in range(0, samples, 50):  # a few missing values: both engines drop those samples per trait
        traits["trait_b"][i] = None
    return {"ids": ids, "variants": variants, "age": age, "sex": sex, "traits": traits,
            "truth": {t: variant_id(c, i) for t, (c, i, _) in CAUSAL.items()}}


def bed_bytes(variants: list, samples: int) -> bytes:
    out = bytearray(b"\x6c\x1b\x01")  # magic, SNP-major
    for *_, counts in variants:
        for start in range(0, samples, 4):
            byte = 0
            for k, c in enumerate(counts[start : start + 4]):
                byte |= BED_CODE[c] << (2 * k)
            out.append(byte)
    return bytes(out)


def write_cohort(lake: str, project: str, samples: int = 600) -> dict:
    data = cohort(project, samples)
    base = f"{lake.rstrip('/')}/raw/{project}/gwas/"
    ids = data["ids"]
    write_uri(base + "cohort.bed", bed_bytes(data["variants"], len(ids)))
    write_uri(base + "cohort.bim", "".join(f"{c}\t{vid}\t0\t{pos}\t{a1}\t{a2}\n"
                                           for c, pos, vid, a1, a2, _ in data["variants"]).encode())
    write_uri(base + "cohort.fam", "".join(f"{s}\t{s}\t0\t0\t0\t-9\n" for s in ids).encode())
    traits = data["traits"]
    lines = ["FID\tIID\t" + "\t".join(traits)]
    for i, s in enumerate(ids):
        values = ["NA" if traits[t][i] is None else f"{traits[t][i]:.5f}" for t in traits]
        lines.append(f"{s}\t{s}\t" + "\t".join(values))
    write_uri(base + "phenotypes.tsv", ("\n".join(lines) + "\n").encode())
    lines = ["FID\tIID\tage\tsex"] + [f"{s}\t{s}\t{a:.1f}\t{x}" for s, a, x in zip(ids, data["age"], data["sex"])]
    write_uri(base + "covariates.tsv", ("\n".join(lines) + "\n").encode())
    write_uri(f"{lake.rstrip('/')}/truth/{project}/gwas.json", json.dumps(data["truth"], indent=2).encode())
    return data["truth"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lake root URI (file:// or s3://)")
    parser.add_argument("--project", required=True)
    parser.add_argument("--samples", type=int, default=600)
    args = parser.parse_args(argv)
    truth = write_cohort(args.lake, args.project, args.samples)
    print(f"GWAS cohort of {args.samples} samples in {args.lake}/raw/{args.project}/gwas/; causal: {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
