"""RNA-seq gene x sample matrices of a project and pipeline version, from every complete sample's salmon
``quant.sf`` and the reference's ``tx2gene.tsv``: the rnaseq ``merge`` step.

What is computed, following tximport's gene-level summary (``summarizeToGene`` with
``countsFromAbundance = "lengthScaledTPM"``; read in its public R source), for transcripts t of gene g in
sample j, with salmon's TPM ``A``, estimated reads ``N`` and effective length ``L``:

- transcripts absent from tx2gene are left out (tximport drops them too); genes are the tx2gene genes that
  have a quantified transcript, sorted by id; samples are sorted by id;
- TPM: ``A_gj = sum_t A_tj``;
- length: the abundance-weighted mean effective length ``L_gj = sum_t A_tj L_tj / A_gj``. Where a gene has no
  abundance in a sample (0/0), tximport's replacement is used: the geometric mean of the gene's lengths in the
  samples where it is defined, or, where it is defined in none, the plain mean over the gene's transcripts of
  their effective length averaged over the samples;
- length-scaled counts: ``C_gj = A_gj * mean_j'(L_gj') * S_j / sum_g' (A_g'j * mean_j'(L_g'j'))``, where
  ``S_j = sum_g sum_t N_tj`` is the sample's estimated read count: TPM times the gene's length averaged over
  all samples, rescaled so that each sample keeps its read total. These are the counts DESeq2's
  ``DESeqDataSetFromMatrix`` or edgeR take as they are (no offset), as tximport's documentation advises for
  ``lengthScaledTPM``. Because the mean runs over all samples, adding a sample changes every column: the
  matrices are rebuilt whenever the sample set or any input changes.

Memory stays bounded at any scale (1,536 samples x 60,000 genes is 740 MB per float64 matrix): each sample's
gene vectors go to two memory-mapped files on the job's disk, one row per sample, and the outputs are written
a block of genes at a time. Needs numpy (Debian python3-numpy in the image) and, for Parquet, pyarrow.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

KINDS = {  # kind -> file name stem, as nf-core/rnaseq names its salmon matrices
    "counts_length_scaled": "salmon.merged.gene_counts_length_scaled",
    "tpm": "salmon.merged.gene_tpm",
    "lengths": "salmon.merged.gene_lengths",
}
FORMATS = ("tsv", "parquet")
MANIFEST = "manifest.json"
GENE_BLOCK = 2048


def files() -> list[str]:
    return [f"{stem}.{fmt}" for stem in KINDS.values() for fmt in FORMATS]


def parse_tx2gene(text: str) -> dict[str, str]:
    """transcript -> gene from tx2gene.tsv (tab-separated, transcript first; a first duplicate wins, as in
    tximport)."""
    mapping: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] and parts[1]:
            mapping.setdefault(parts[0], parts[1].strip())
    return mapping


def parse_quant(text: str):
    """Names, effective lengths, TPM and estimated reads of a salmon quant.sf."""
    import numpy as np

    lines = text.splitlines()
    if not lines or not lines[0].startswith("Name\t"):
        raise ValueError("not a salmon quant.sf: its first line is not the Name/Length/... header")
    names = [line.split("\t", 1)[0] for line in lines[1:]]
    values = np.loadtxt(io.StringIO(text), skiprows=1, usecols=(2, 3, 4), dtype=np.float64, delimiter="\t",
                        ndmin=2)
    return names, values[:, 0], values[:, 1], values[:, 2]


@dataclass
class Summary:
    """The gene-level summary of every sample; ``blocks()`` yields the three matrices a block of genes at a time."""

    genes: list[str]
    samples: list[str]
    tpm: Any  # samples x genes (memory-mapped)
    length: Any  # samples x genes, NaN where the gene has no abundance in the sample
    fill: Any  # per gene: the length that replaces NaN
    mean_length: Any  # per gene: the length averaged over all samples, after replacement
    scale: Any  # per sample: S_j / sum_g A_gj mean(L_g)

    def blocks(self, size: int = GENE_BLOCK) -> Iterator[tuple[list[str], dict[str, Any]]]:
        """(gene ids, {kind: genes x samples array}) per block of genes."""
        import numpy as np

        for start in range(0, len(self.genes), size):
            stop = min(start + size, len(self.genes))
            tpm = np.array(self.tpm[:, start:stop]).T
            length = np.array(self.length[:, start:stop]).T
            length = np.where(np.isnan(length), self.fill[start:stop, None], length)
            counts = tpm * self.mean_length[start:stop, None] * self.scale[None, :]
            yield self.genes[start:stop], {"counts_length_scaled": counts, "tpm": tpm, "lengths": length}


def summarize(samples: list[str], quant_of: Callable[[str], str], tx2gene: dict[str, str], work: Path) -> Summary:
    """Read each sample's quant.sf once (``quant_of(sample)`` returns its text) and summarize to genes."""
    import numpy as np

    if not samples:
        raise ValueError("no sample to summarize")
    order: list[str] | None = None
    for j, sample in enumerate(samples):
        names, eff, tpm, reads = parse_quant(quant_of(sample))
        if order is None:
            order = names
            keep = np.array([name in tx2gene for name in names])
            if not keep.any():
                raise ValueError(f"none of the transcripts of {sample}'s quant.sf (e.g. {names[:3]}) is in "
                                 "tx2gene.tsv: was it quantified against this reference?")
            genes = sorted({tx2gene[name] for name in names if name in tx2gene})
            position = {gene: i for i, gene in enumerate(genes)}
            gene_of = np.array([position[tx2gene[name]] for name in names if name in tx2gene])
            n_genes, n = len(genes), len(samples)
            tpm_m = np.lib.format.open_memmap(work / "tpm.npy", mode="w+", dtype=np.float64, shape=(n, n_genes))
            len_m = np.lib.format.open_memmap(work / "length.npy", mode="w+", dtype=np.float64, shape=(n, n_genes))
            defined = np.zeros(n_genes)
            log_sum = np.zeros(n_genes)
            len_sum = np.zeros(n_genes)
            tx_len_sum = np.zeros(int(keep.sum()))
            read_sum = np.zeros(n)
        elif names != order:
            raise ValueError(f"{sample}'s quant.sf lists other transcripts than {samples[0]}'s: every sample of a "
                             "matrix must be quantified against the same salmon index")
        a, l_eff = tpm[keep], eff[keep]
        gene_tpm = np.bincount(gene_of, weights=a, minlength=n_genes)
        with np.errstate(divide="ignore", invalid="ignore"):
            gene_len = np.bincount(gene_of, weights=a * l_eff, minlength=n_genes) / gene_tpm
        ok = ~np.isnan(gene_len)
        defined += ok
        log_sum += np.log(np.where(ok, gene_len, 1.0))
        len_sum += np.where(ok, gene_len, 0.0)
        tx_len_sum += l_eff
        read_sum[j] = reads[keep].sum()
        tpm_m[j], len_m[j] = gene_tpm, gene_len
    n = len(samples)
    tx_mean = tx_len_sum / n
    simple = np.bincount(gene_of, weights=tx_mean, minlength=n_genes) / np.bincount(gene_of, minlength=n_genes)
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = np.where(defined > 0, np.exp(log_sum / np.maximum(defined, 1)), simple)
    mean_length = (len_sum + (n - defined) * fill) / n
    new_sum = np.array([float(tpm_m[j] @ mean_length) for j in range(n)])
    scale = np.divide(read_sum, new_sum, out=np.zeros(n), where=new_sum > 0)
    return Summary(genes, list(samples), tpm_m, len_m, fill, mean_length, scale)


def write(summary: Summary, out: Path) -> dict[str, Path]:
    """Write every kind as TSV (gene_id first, then one column per sample) and Parquet (the same columns,
    a row group per block of genes). Returns {file name: path}."""
    import numpy as np

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("writing the Parquet matrices needs pyarrow (the rnaseq image installs it)") from None
    written = {name: out / name for name in files()}
    schema = pa.schema([("gene_id", pa.string())] + [(s, pa.float64()) for s in summary.samples])
    header = "\t".join(["gene_id", *summary.samples]) + "\n"
    row_format = "%s" + "\t%.10g" * len(summary.samples) + "\n"
    tsv = {kind: open(written[f"{stem}.tsv"], "w") for kind, stem in KINDS.items()}
    parquet = {kind: pq.ParquetWriter(written[f"{stem}.parquet"], schema, compression="snappy")
               for kind, stem in KINDS.items()}
    try:
        for handle in tsv.values():
            handle.write(header)
        for genes, block in summary.blocks():
            for kind, values in block.items():
                tsv[kind].write("".join(row_format % (gene, *row) for gene, row in zip(genes, values.tolist())))
                columns = [pa.array(genes, pa.string())] + [pa.array(np.ascontiguousarray(values[:, j]))
                                                            for j in range(values.shape[1])]
                parquet[kind].write_table(pa.Table.from_arrays(columns, schema=schema))
    finally:
        for handle in tsv.values():
            handle.close()
        for writer in parquet.values():
            writer.close()
    return written


def inputs_digest(samples: list[str], listing: dict[str, str], tx2gene: bytes) -> str:
    """What the matrices were built from: the samples, their quant.sf and salmon metrics.json as the results
    listing fingerprints them (a rerun with force rewrites both), and the tx2gene text."""
    digest = hashlib.sha256(tx2gene)
    for sample in sorted(samples):
        for file in ("quant.sf", "metrics.json"):
            path = f"sample={sample}/salmon_quant/{file}"
            digest.update(f"{path}\t{listing.get(path, '')}\n".encode())
    return digest.hexdigest()


def manifest_document(samples: list[str], digest: str, uris: dict[str, str], built_at: str,
                      n_genes: int) -> dict[str, Any]:
    return {"samples": sorted(samples), "inputs": digest, "built_at": built_at, "genes": n_genes,
            "files": uris, "counts": "tximport lengthScaledTPM (see genomics_steps.matrices)"}


def published_rows(manifest: dict[str, Any]) -> list[list[Any]]:
    """The rnaseq_matrices rows of a manifest: one per kind and format."""
    rows = []
    for kind, stem in KINDS.items():
        for fmt in FORMATS:
            rows.append([kind, fmt, manifest["files"][f"{stem}.{fmt}"], len(manifest["samples"]),
                         ",".join(manifest["samples"]), manifest["inputs"], manifest["built_at"]])
    return rows


def manifest_of(text: bytes | None) -> dict[str, Any] | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
