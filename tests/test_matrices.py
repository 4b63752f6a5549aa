"""The rnaseq count matrices (genomics_steps.matrices and the rnaseq ``merge`` step) and the run report's reading
of a run's outcomes (genomics_steps.run_report).

The expected values are worked out here by hand from tximport's definitions (see the matrices module), on
small quant.sf files whose numbers are chosen so each rule shows: a gene with two isoforms, a gene without
abundance in one sample, a gene without abundance anywhere, a transcript tx2gene does not know.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genomics_steps import layout, matrices
from genomics_steps.run_report import outcomes_of, verdict

ROOT = Path(__file__).resolve().parent.parent
HEADER = "Name\tLength\tEffectiveLength\tTPM\tNumReads\n"
TX2GENE = "A-1\tGA\nA-2\tGA\nB-1\tGB\nC-1\tGC\nC-2\tGC\nD-1\tGD\n"  # D-1 is never quantified
# transcript: (effective length, TPM, reads) per sample; X-1 is not in tx2gene
QUANT = {
    "S2": {"A-1": (100.0, 300000.0, 30.0), "A-2": (300.0, 100000.0, 30.0), "B-1": (200.0, 0.0, 0.0),
           "C-1": (150.0, 0.0, 0.0), "C-2": (250.0, 0.0, 0.0), "X-1": (50.0, 600000.0, 30.0)},
    "S1": {"A-1": (120.0, 200000.0, 24.0), "A-2": (280.0, 200000.0, 56.0), "B-1": (180.0, 500000.0, 90.0),
           "C-1": (150.0, 0.0, 0.0), "C-2": (250.0, 0.0, 0.0), "X-1": (50.0, 100000.0, 5.0)},
}


def quant_sf(sample: str) -> str:
    return HEADER + "".join(f"{t}\t{int(e) + 10}\t{e}\t{tpm}\t{n}\n" for t, (e, tpm, n) in QUANT[sample].items())


def summary(tmp_path: Path, samples=("S1", "S2")) -> matrices.Summary:
    return matrices.summarize(list(samples), quant_sf, matrices.parse_tx2gene(TX2GENE), tmp_path)


def as_dict(result: matrices.Summary, block: int = 2) -> dict[str, dict[str, list[float]]]:
    """kind -> gene -> values per sample, gathered from the blocks."""
    out: dict[str, dict[str, list[float]]] = {kind: {} for kind in matrices.KINDS}
    for genes, values in result.blocks(block):
        for kind, array in values.items():
            out[kind].update({gene: row for gene, row in zip(genes, array.tolist())})
    return out


def test_genes_are_the_quantified_tx2gene_genes_sorted_and_unknown_transcripts_are_left_out(tmp_path):
    result = summary(tmp_path)
    assert result.genes == ["GA", "GB", "GC"], "GD has no quantified transcript; X-1 has no gene"
    assert result.samples == ["S1", "S2"]


def test_tpm_of_a_gene_is_the_sum_of_its_transcripts(tmp_path):
    tpm = as_dict(summary(tmp_path))["tpm"]
    assert tpm == {"GA": [400000.0, 400000.0], "GB": [500000.0, 0.0], "GC": [0.0, 0.0]}


def test_gene_length_is_the_abundance_weighted_mean_effective_length(tmp_path):
    lengths = as_dict(summary(tmp_path))["lengths"]
    assert lengths["GA"][0] == pytest.approx((200000 * 120 + 200000 * 280) / 400000)  # 200
    assert lengths["GA"][1] == pytest.approx((300000 * 100 + 100000 * 300) / 400000)  # 150


def test_a_gene_without_abundance_in_a_sample_gets_the_geometric_mean_of_its_other_lengths(tmp_path):
    lengths = as_dict(summary(tmp_path))["lengths"]
    assert lengths["GB"] == pytest.approx([180.0, 180.0]), "S2's GB: the only defined length, S1's"
    s3 = quant_sf("S1").replace("B-1\t190\t180.0", "B-1\t330\t320.0")
    three = as_dict(matrices.summarize(["S1", "S2", "S3"], lambda s: s3 if s == "S3" else quant_sf(s),
                                       matrices.parse_tx2gene(TX2GENE), tmp_path))["lengths"]
    assert three["GB"] == pytest.approx([180.0, math.sqrt(180 * 320), 320.0]), "geometric, not arithmetic (250)"


def test_a_gene_without_abundance_anywhere_gets_the_mean_effective_length_of_its_transcripts(tmp_path):
    lengths = as_dict(summary(tmp_path))["lengths"]
    assert lengths["GC"] == pytest.approx([200.0, 200.0]), "(150 + 250) / 2, each averaged over the samples"


def test_length_scaled_counts_are_tpm_times_mean_length_rescaled_to_each_samples_read_total(tmp_path):
    counts = as_dict(summary(tmp_path))["counts_length_scaled"]
    mean_length = {"GA": (200 + 150) / 2, "GB": 180.0, "GC": 200.0}
    tpm = {"S1": {"GA": 400000, "GB": 500000, "GC": 0}, "S2": {"GA": 400000, "GB": 0, "GC": 0}}
    reads = {"S1": 24 + 56 + 90, "S2": 30 + 30 + 0}  # X-1's reads are not a gene's
    for j, sample in enumerate(["S1", "S2"]):
        raw = {g: tpm[sample][g] * mean_length[g] for g in mean_length}
        for gene in mean_length:
            assert counts[gene][j] == pytest.approx(raw[gene] * reads[sample] / sum(raw.values()))
        assert sum(counts[g][j] for g in counts) == pytest.approx(reads[sample])


def test_the_blocks_of_genes_give_the_same_matrices_whatever_their_size(tmp_path):
    result = summary(tmp_path)
    assert as_dict(result, block=1) == as_dict(result, block=1000)


def test_samples_quantified_against_other_transcripts_are_refused(tmp_path):
    other = HEADER + "A-1\t110\t100.0\t1000000.0\t10\n"
    with pytest.raises(ValueError, match="S2's quant.sf lists other transcripts than S1's"):
        matrices.summarize(["S1", "S2"], lambda s: quant_sf("S1") if s == "S1" else other,
                           matrices.parse_tx2gene(TX2GENE), tmp_path)


def test_a_quant_sf_none_of_whose_transcripts_tx2gene_knows_is_refused(tmp_path):
    with pytest.raises(ValueError, match="none of the transcripts of S1's quant.sf"):
        matrices.summarize(["S1"], quant_sf, {"Z-1": "GZ"}, tmp_path)


def test_written_files_have_gene_id_first_then_the_samples_in_tsv_and_parquet(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    out.mkdir()
    result = summary(tmp_path)
    written = matrices.write(result, out)
    assert sorted(written) == sorted(matrices.files())
    lines = written["salmon.merged.gene_tpm.tsv"].read_text().splitlines()
    assert lines[0] == "gene_id\tS1\tS2" and [line.split("\t")[0] for line in lines[1:]] == ["GA", "GB", "GC"]
    assert [float(v) for v in lines[2].split("\t")[1:]] == [500000.0, 0.0]
    table = pq.read_table(written["salmon.merged.gene_counts_length_scaled.parquet"])
    assert table.column_names == ["gene_id", "S1", "S2"]
    expected = as_dict(result)["counts_length_scaled"]
    assert table.column("S1").to_pylist() == pytest.approx([expected[g][0] for g in ["GA", "GB", "GC"]])


# --- the merge step: every complete sample, rebuilt only when the samples or inputs change ------------------
def _complete(lake: Path, sample: str, quant: str) -> None:
    """A sample whose rnaseq steps are complete for version 1.0 (their metrics.json written last)."""
    for step in ("fastp", "salmon_quant"):
        folder = lake / f"results/rnaseq/1.0/project=P1/sample={sample}/{step}"
        folder.mkdir(parents=True, exist_ok=True)
        if step == "salmon_quant":
            (folder / "quant.sf").write_text(quant)
        (folder / "metrics.json").write_text(json.dumps({"step": step}))


def _merge(lake: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include"), "GENOMICS_LAKE_URI": f"file://{lake}",
           "GENOMICS_PROJECT": "P1", "GENOMICS_PIPELINE": "rnaseq", "TMPDIR": str(lake.parent)}
    return subprocess.run([sys.executable, "-m", "genomics_steps.rnaseq", "merge", "--pipeline-version", "1.0",
                           "--reference", "ref1", *extra], env=env, capture_output=True, text=True)


@pytest.fixture
def lake(tmp_path):
    lake = tmp_path / "lake"
    (lake / "references/ref1").mkdir(parents=True)
    (lake / "references/ref1/tx2gene.tsv").write_text(TX2GENE)
    _complete(lake, "S1", quant_sf("S1"))
    _complete(lake, "S2", quant_sf("S2"))
    incomplete = lake / "results/rnaseq/1.0/project=P1/sample=S3/fastp"  # excluded at fastp: no salmon_quant
    incomplete.mkdir(parents=True)
    (incomplete / "metrics.json").write_text("{}")
    return lake


def _manifest(lake: Path) -> dict:
    return json.loads((lake / "results/rnaseq/1.0/project=P1/matrices/manifest.json").read_text())


def test_merge_covers_every_complete_sample_and_stages_where_the_matrices_are(lake):
    out = _merge(lake)
    assert out.returncode == 0, out.stderr
    manifest = _manifest(lake)
    assert manifest["samples"] == ["S1", "S2"], "S3 is not complete"
    staged = (lake / "staging/rnaseq_matrices/rnaseq/1.0/project=P1/pipeline_version=1.0/matrices.tsv").read_text()
    rows = [line.split("\t") for line in staged.splitlines()]
    assert rows[0] == ["kind", "format", "uri", "n_samples", "samples", "inputs", "built_at"]
    assert {(r[0], r[1]) for r in rows[1:]} == {(k, f) for k in matrices.KINDS for f in matrices.FORMATS}
    for row in rows[1:]:
        assert Path(row[2].removeprefix("file://")).is_file() and row[3:5] == ["2", "S1,S2"]


def test_merge_with_unchanged_samples_and_inputs_rewrites_nothing(lake):
    assert _merge(lake).returncode == 0
    folder = lake / "results/rnaseq/1.0/project=P1/matrices"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = _merge(lake)
    assert again.returncode == 0 and "nothing to rewrite" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_merge_rebuilds_when_a_sample_completes(lake):
    assert _merge(lake).returncode == 0
    _complete(lake, "S3", quant_sf("S1"))
    assert _merge(lake).returncode == 0
    assert _manifest(lake)["samples"] == ["S1", "S2", "S3"]
    header = (lake / "results/rnaseq/1.0/project=P1/matrices/salmon.merged.gene_tpm.tsv").read_text().splitlines()[0]
    assert header == "gene_id\tS1\tS2\tS3"


def test_merge_rebuilds_when_a_samples_quantification_is_redone(lake):
    assert _merge(lake).returncode == 0
    first = _manifest(lake)["inputs"]
    quant = lake / "results/rnaseq/1.0/project=P1/sample=S2/salmon_quant/quant.sf"
    quant.write_text(quant_sf("S1"))  # as a forced rerun of salmon_quant rewrites it
    os.utime(quant, ns=(quant.stat().st_atime_ns, quant.stat().st_mtime_ns + 1_000_000))
    assert _merge(lake).returncode == 0
    assert _manifest(lake)["inputs"] != first


def test_merge_with_no_complete_sample_fails_saying_so(tmp_path):
    empty = tmp_path / "lake"
    (empty / "references/ref1").mkdir(parents=True)
    (empty / "references/ref1/tx2gene.tsv").write_text(TX2GENE)
    out = _merge(empty)
    assert out.returncode == 1 and "no sample of project P1 is complete for rnaseq 1.0" in out.stderr


def test_the_matrices_folder_is_never_taken_for_a_sample(lake):
    assert _merge(lake).returncode == 0
    root = lake / "results/rnaseq/1.0/project=P1"
    listing = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert any(path.startswith("matrices/") for path in listing)
    assert layout.completed_samples(listing, ["fastp", "salmon_quant"]) == {"S1", "S2"}


# --- the run report: a run's outcomes, from the names of its staged outcome files -------------------------
def test_the_report_reads_where_each_sample_stopped_from_the_staged_outcome_files():
    listing = {"sample_id=A/fastp-succeeded-j1.tsv": "", "sample_id=A/salmon_quant-succeeded-j2.tsv": "",
               "sample_id=B/fastp-excluded-j3.tsv": "", "sample_id=B/salmon_quant-not_run-none.tsv": "",
               "sample_id=C/fastp-failed-j4.tsv": "", "sample_id=C/fastp-succeeded-j5.tsv": "",
               "sample_id=C/salmon_quant-failed-j6.tsv": ""}
    recorded = outcomes_of(listing)
    steps = ["fastp", "salmon_quant"]
    assert verdict(steps, recorded["A"]) == ("succeeded", "")
    assert verdict(steps, recorded["B"]) == ("excluded", "fastp")
    assert verdict(steps, recorded["C"]) == ("failed", "salmon_quant"), "a resubmission that succeeded wins"
    assert verdict(steps, {}) == ("done before", ""), "no job of this run touched it"
