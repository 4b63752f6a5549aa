"""Which reads a run takes: an nf-core style samplesheet, or the samples found in a folder such as a BCL
Convert output (lanes split or not, Undetermined files, per-project folders), single-end included. The plan
decides it before any job and refuses a run whose inputs are wrong, naming every problem at once."""

from __future__ import annotations

import re

import pytest

from genomics_steps import layout, read_inputs, synthetic
from genomics_steps.read_inputs import SampleReads
from pipeline_plan import ALL_APPROVED, ALL_FOUND, PipelineSpec, RunConfigError, plan_run

LAKE = "s3://lake-bucket/genomics"
RNASEQ = PipelineSpec(name="rnaseq", steps=["fastp", "salmon_quant"], reference_files=["transcriptome.fa"],
                      index_tool="salmon")
GERMLINE = PipelineSpec(name="germline", steps=["bwa_mem"], reference_files=["genome.fa"], index_tool="bwa")
SHEETS = f"{LAKE}/sheets/"
SHEET = SHEETS + "run1.csv"


class Lake:
    """An in-memory lake: folder URI -> file names below it (sub-folders included); counts listings."""

    def __init__(self, files: dict[str, list[str]] | None = None, texts: dict[str, str] | None = None):
        self.files = {layout.reference_prefix(LAKE, "ref1"): ["transcriptome.fa", "genome.fa"], **(files or {})}
        self.texts = texts or {}
        self.listed: list[str] = []

    def list_files(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return self.files.get(prefix, [])

    def read_text(self, uri: str) -> str:
        if uri not in self.texts:
            raise FileNotFoundError(uri)
        return self.texts[uri]


def plan(lake: Lake, spec: PipelineSpec = RNASEQ, backend: str = "aws", approved=(), **params):
    config = {"project": "P1", "reference": "ref1", "pipeline_version": "1.0", "samples": ALL_APPROVED, **params}
    return plan_run(spec, config, lake_root=LAKE, backend=backend, list_files=lake.list_files,
                    approved_samples=lambda project: list(approved), max_map_length=1024,
                    read_text=lake.read_text)


def sheet_lake(text: str, present=("A_R1.fastq.gz", "A_R2.fastq.gz", "B_R1.fastq.gz", "B_R2.fastq.gz")) -> Lake:
    return Lake({SHEETS: [*present, "run1.csv"]}, {SHEET: text})


def refusal(lake: Lake, **params) -> str:
    with pytest.raises(RunConfigError) as refused:
        plan(lake, samplesheet=SHEET, **params)
    return str(refused.value)


# --- samplesheets ------------------------------------------------------------------------------------
BAD_SHEETS = [
    ("unknown column", "sample,fastq_1,fastq_2,condition\nA,A_R1.fastq.gz,A_R2.fastq.gz,x\n",
     ["line 1: unknown column 'condition'"]),
    ("misspelt column", "sample,fastq1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\n",
     ["line 1: unknown column 'fastq1'; did you mean 'fastq_1'?", "line 1: missing column 'fastq_1'"]),
    ("missing required column", "sample,fastq_1\nA,A_R1.fastq.gz\n", ["line 1: missing column 'fastq_2'"]),
    ("bad sample id", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\nB 2,B_R1.fastq.gz,B_R2.fastq.gz\n",
     ["line 3: sample 'B 2' is not a sample id"]),
    ("sample id with a hidden newline", 'sample,fastq_1,fastq_2\n"A\n",A_R1.fastq.gz,A_R2.fastq.gz\n',
     ["line 3: sample 'A\\n' is not a sample id"]),
    ("mixed single- and paired-end rows", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\nA,B_R1.fastq.gz,\n",
     ["sample 'A' mixes paired-end rows (lines 2) and single-end rows (lines 3)"]),
    ("a file missing in the lake", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\nC,C_R1.fastq.gz,\n",
     [f"line 3 fastq_1: {SHEETS}C_R1.fastq.gz is not in the lake"]),
    ("the same file twice", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\nB,A_R1.fastq.gz,B_R2.fastq.gz\n",
     ["line 3 fastq_1: 'A_R1.fastq.gz' is the same file as line 2 fastq_1"]),
    ("R1 given as R2", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R1.fastq.gz\n",
     ["line 2 fastq_2: 'A_R1.fastq.gz' is the same file as line 2 fastq_1"]),
    ("bad strandedness", "sample,fastq_1,fastq_2,strandedness\nA,A_R1.fastq.gz,A_R2.fastq.gz,stranded\n",
     ["line 2: strandedness 'stranded' must be one of unstranded, forward, reverse, auto"]),
    ("two strandedness values for one sample",
     "sample,fastq_1,fastq_2,strandedness\nA,A_R1.fastq.gz,A_R2.fastq.gz,reverse\nA,B_R1.fastq.gz,B_R2.fastq.gz,forward\n",
     ["lines 2, 3: sample 'A' has several strandedness values"]),
    ("empty sheet", "", ["is empty"]),
    ("header only", "sample,fastq_1,fastq_2\n", ["has a header but no samples"]),
    ("no R1", "sample,fastq_1,fastq_2\nA,,A_R2.fastq.gz\n", ["line 2: fastq_1 is empty"]),
    ("a path out of the sheet's folder", "sample,fastq_1,fastq_2\nA,../A_R1.fastq.gz,A_R2.fastq.gz\n",
     ["line 2: fastq_1 '../A_R1.fastq.gz' is not a .fastq.gz or .fq.gz path"]),
    ("not gzipped", "sample,fastq_1,fastq_2\nA,A_R1.fastq,A_R2.fastq.gz\n", ["line 2: fastq_1 'A_R1.fastq' is not"]),
    ("a local file on AWS", "sample,fastq_1,fastq_2\nA,file:///data/A_R1.fastq.gz,A_R2.fastq.gz\n",
     ["line 2: fastq_1 'file:///data/A_R1.fastq.gz' is a local path"]),
    ("lane not a number", "sample,fastq_1,fastq_2,lane\nA,A_R1.fastq.gz,A_R2.fastq.gz,L1\n",
     ["line 2: lane 'L1' is not a lane number"]),
    ("lane on some rows only", "sample,fastq_1,fastq_2,lane\nA,A_R1.fastq.gz,A_R2.fastq.gz,1\nA,B_R1.fastq.gz,B_R2.fastq.gz,\n",
     ["lines 2, 3: sample 'A' gives a lane or run on some rows only"]),
    ("one lane twice", "sample,fastq_1,fastq_2,lane\nA,A_R1.fastq.gz,A_R2.fastq.gz,1\nA,B_R1.fastq.gz,B_R2.fastq.gz,1\n",
     ["lines 2, 3: sample 'A' names a lane or run twice"]),
    ("lane and run", "sample,fastq_1,fastq_2,lane,run\nA,A_R1.fastq.gz,A_R2.fastq.gz,1,r1\n",
     ["line 1: give a lane or a run column, not both"]),
    ("too many values", "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz,extra\n", ["line 2: 4 values for 3 columns"]),
]


@pytest.mark.parametrize("text, expected", [case[1:] for case in BAD_SHEETS], ids=[case[0] for case in BAD_SHEETS])
def test_a_bad_samplesheet_is_refused_naming_the_line_and_the_field(text, expected):
    message = refusal(sheet_lake(text))
    for part in expected:
        assert part in message, message


def test_every_problem_of_a_samplesheet_is_named_in_one_refusal():
    text = ("sample,fastq_1,fastq_2,strandedness\n"
            "A,A_R1.fastq.gz,A_R2.fastq.gz,reverse\n"
            "B!,B_R1.fastq.gz,B_R2.fastq.gz,\n"          # bad id
            "C,C_R1.fastq.gz,,sideways\n"                # missing file, bad strandedness
            "D,A_R2.fastq.gz,,\n")                       # duplicate file
    message = refusal(sheet_lake(text))
    assert "line 3: sample 'B!' is not a sample id" in message
    assert "line 4: strandedness 'sideways'" in message
    assert f"line 4 fastq_1: {SHEETS}C_R1.fastq.gz is not in the lake" in message
    assert "line 5 fastq_1: 'A_R2.fastq.gz' is the same file as line 2 fastq_2" in message


def test_a_samplesheet_that_does_not_exist_is_refused():
    with pytest.raises(RunConfigError, match=r"samplesheet '.*/other\.csv' does not exist"):
        plan(sheet_lake(""), samplesheet=SHEETS + "other.csv")


@pytest.mark.parametrize("uri, backend, message", [
    (SHEETS + "run1.csv\n", "aws", r"samplesheet '.*run1\.csv\\n' is not an s3:// or file:// URI of a \.csv"),
    (SHEETS + "run1.tsv", "aws", r"is not an s3:// or file:// URI of a \.csv"),
    ("file:///data/run1.csv", "aws", r"samplesheet 'file:///data/run1.csv' is a local path"),
])
def test_a_bad_samplesheet_uri_is_refused_before_the_lake_is_read(uri, backend, message):
    lake = sheet_lake("sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\n")
    with pytest.raises(RunConfigError, match=message):
        plan(lake, backend=backend, samplesheet=uri)
    assert lake.listed == []


def test_a_samplesheet_and_an_input_uri_together_are_refused():
    with pytest.raises(RunConfigError, match="give a samplesheet or an input_uri, not both"):
        plan(sheet_lake("sample,fastq_1,fastq_2\n"), samplesheet=SHEET, input_uri=f"{LAKE}/runs/x/")


def test_a_samplesheets_rows_of_one_sample_are_its_lanes_in_lane_order():
    text = ("sample,fastq_1,fastq_2,lane,strandedness\n"
            "LIVER,fastq/L_L003_R1.fastq.gz,fastq/L_L003_R2.fastq.gz,3,reverse\n"
            "LIVER,fastq/L_L001_R1.fastq.gz,fastq/L_L001_R2.fastq.gz,1,reverse\n"
            "LIVER,fastq/L_L002_R1.fastq.gz,fastq/L_L002_R2.fastq.gz,2,reverse\n"
            "SE,s3://other-bucket/geo/GSM1_R1.fastq.gz,,,\n")
    lake = Lake({SHEETS + "fastq/": [f"L_L00{lane}_R{mate}.fastq.gz" for lane in (1, 2, 3) for mate in (1, 2)],
                 "s3://other-bucket/geo/": ["GSM1_R1.fastq.gz"]}, {SHEET: text})
    planned = plan(lake, samplesheet=SHEET)
    assert planned["samples"] == ["LIVER", "SE"]
    liver = SampleReads.from_json(planned["reads"]["LIVER"])
    assert liver.r1 == tuple(f"{SHEETS}fastq/L_L00{lane}_R1.fastq.gz" for lane in (1, 2, 3))
    assert liver.r2 == tuple(f"{SHEETS}fastq/L_L00{lane}_R2.fastq.gz" for lane in (1, 2, 3))
    assert liver.salmon_library_type() == "ISR"
    single = SampleReads.from_json(planned["reads"]["SE"])
    assert single.r1 == ("s3://other-bucket/geo/GSM1_R1.fastq.gz",) and single.r2 is None
    assert single.salmon_library_type() == "A", "no strandedness given: salmon infers it"
    file_checks = [p for p in lake.listed if p in (SHEETS + "fastq/", "s3://other-bucket/geo/")]
    assert sorted(file_checks) == sorted({SHEETS + "fastq/", "s3://other-bucket/geo/"}), "one listing per folder"


def test_rows_without_lane_or_run_are_read_in_the_sheets_order():
    text = "sample,fastq_1,fastq_2\nA,B_R1.fastq.gz,B_R2.fastq.gz\nA,A_R1.fastq.gz,A_R2.fastq.gz\n"
    reads = SampleReads.from_json(plan(sheet_lake(text), samplesheet=SHEET)["reads"]["A"])
    assert reads.r1 == (SHEETS + "B_R1.fastq.gz", SHEETS + "A_R1.fastq.gz")


def test_rows_with_a_run_column_are_read_in_run_order():
    text = "sample,fastq_1,fastq_2,run\nA,B_R1.fastq.gz,,SRR2\nA,A_R1.fastq.gz,,SRR1\n"
    reads = SampleReads.from_json(plan(sheet_lake(text), samplesheet=SHEET)["reads"]["A"])
    assert reads.r1 == (SHEETS + "A_R1.fastq.gz", SHEETS + "B_R1.fastq.gz") and reads.r2 is None


@pytest.mark.parametrize("strandedness, paired, library", [
    ("unstranded", True, "IU"), ("unstranded", False, "U"), ("forward", True, "ISF"), ("forward", False, "SF"),
    ("reverse", True, "ISR"), ("reverse", False, "SR"), ("auto", True, "A"), (None, False, "A"),
])
def test_strandedness_becomes_salmons_library_type(strandedness, paired, library):
    reads = SampleReads(("r1",), ("r2",) if paired else None, strandedness)
    assert reads.salmon_library_type() == library


def test_germline_refuses_a_strandedness_column():
    text = "sample,fastq_1,fastq_2,strandedness\nA,A_R1.fastq.gz,A_R2.fastq.gz,reverse\n"
    with pytest.raises(RunConfigError, match="line 1: unknown column 'strandedness'; strandedness is for rnaseq"):
        plan(sheet_lake(text), spec=GERMLINE, samplesheet=SHEET)


def test_with_a_samplesheet_its_samples_run_unless_samples_is_a_list():
    text = "sample,fastq_1,fastq_2\nA,A_R1.fastq.gz,A_R2.fastq.gz\nB,B_R1.fastq.gz,B_R2.fastq.gz\n"
    assert plan(sheet_lake(text), samplesheet=SHEET, approved=["X"])["samples"] == ["A", "B"], \
        "the default, all approved, means the sheet's samples: the registry is not asked"
    assert plan(sheet_lake(text), samplesheet=SHEET, samples=ALL_FOUND)["samples"] == ["A", "B"]
    assert plan(sheet_lake(text), samplesheet=SHEET, samples=["B"])["todo"] == ["B"]
    with pytest.raises(RunConfigError, match=r"1 sample\(s\) are not in samplesheet .*\['Z'\]"):
        plan(sheet_lake(text), samplesheet=SHEET, samples=["A", "Z"])


# --- run folders -------------------------------------------------------------------------------------
RUN = f"{LAKE}/runs/251130_A01234_0042_BHXYZ/"


def bcl_convert_listing(tmp_path, *, split: bool, project_folder: str = "") -> list[str]:
    """The listing of a real folder written as BCL Convert lays out its output (synthetic reads)."""
    r1, r2, _ = synthetic.rnaseq_sample("synthetic-v1", "LIVER", fragments=400)
    se, _, _ = synthetic.rnaseq_sample("synthetic-v1", "GSM1", fragments=400)
    return synthetic.write_bcl_convert_output(tmp_path.as_uri() + "/", {"LIVER_1": (r1, r2), "GSM1": (se, None)},
                                              lanes=4, split=split, project_folder=project_folder)


def test_a_bcl_convert_folder_with_lanes_split_gives_each_sample_its_lanes_in_order(tmp_path):
    listing = bcl_convert_listing(tmp_path, split=True, project_folder="ProjectA")
    assert "Undetermined_S0_L001_R1_001.fastq.gz" in listing and "Reports/Demultiplex_Stats.csv" in listing
    found = read_inputs.discover(RUN, listing[::-1])  # whatever order the listing comes in
    assert sorted(found.samples) == ["GSM1", "LIVER_1"] and not found.broken
    liver = found.samples["LIVER_1"]
    assert liver.r1 == tuple(f"{RUN}ProjectA/LIVER_1_S1_L00{lane}_R1_001.fastq.gz" for lane in (1, 2, 3, 4))
    assert liver.r2 == tuple(f"{RUN}ProjectA/LIVER_1_S1_L00{lane}_R2_001.fastq.gz" for lane in (1, 2, 3, 4))
    assert found.samples["GSM1"].r2 is None and len(found.samples["GSM1"].r1) == 4, "single-end, four lanes"
    assert sorted(p for p, _ in found.ignored) == sorted(p for p in listing if p.startswith("Undetermined"))
    assert {why for _, why in found.ignored} == {"undetermined reads"}


def test_a_bcl_convert_folder_without_lane_splitting_gives_one_file_per_read(tmp_path):
    found = read_inputs.discover(RUN, bcl_convert_listing(tmp_path, split=False))
    assert found.samples["LIVER_1"] == SampleReads((f"{RUN}LIVER_1_S1_R1_001.fastq.gz",),
                                                   (f"{RUN}LIVER_1_S1_R2_001.fastq.gz",))
    assert found.samples["GSM1"] == SampleReads((f"{RUN}GSM1_S2_R1_001.fastq.gz",), None)


def test_this_projects_own_naming_is_found_as_before_and_r1_alone_is_single_end():
    found = read_inputs.discover(RUN, ["A_R1.fastq.gz", "A_R2.fastq.gz", "SE_R1.fastq.gz", "notes.txt"])
    assert found.samples == {"A": SampleReads((f"{RUN}A_R1.fastq.gz",), (f"{RUN}A_R2.fastq.gz",)),
                             "SE": SampleReads((f"{RUN}SE_R1.fastq.gz",), None)}
    assert found.other_files == 1


def test_index_reads_and_unknown_fastq_names_are_ignored_with_their_reason():
    found = read_inputs.discover(RUN, ["A_S1_L001_R1_001.fastq.gz", "A_S1_L001_I1_001.fastq.gz",
                                       "reads.fastq.gz", "A_S1_L001_R1_001.fastq"])
    assert dict(found.ignored) == {
        "A_S1_L001_I1_001.fastq.gz": "index read",
        "reads.fastq.gz": "named neither <sample>_S<n>[_L<lane>]_R1_001.fastq.gz nor <sample>_R1.fastq.gz",
        "A_S1_L001_R1_001.fastq": "not a gzipped FASTQ",
    }


@pytest.mark.parametrize("listing, why", [
    (["A_S1_L001_R2_001.fastq.gz"], "R2 without R1"),
    (["A_S1_L001_R1_001.fastq.gz", "A_S1_L002_R1_001.fastq.gz", "A_S1_L001_R2_001.fastq.gz"],
     "R1 lanes [1, 2] differ from R2 lanes [1]"),
    (["A_S1_L001_R1_001.fastq.gz", "A_S1_R1_001.fastq.gz"], "files with and without a lane number"),
    (["ProjA/A_S1_R1_001.fastq.gz", "ProjB/A_S3_R1_001.fastq.gz"], "in several folders: ProjA/, ProjB/"),
    (["A_R1.fastq.gz", "A_S1_R1_001.fastq.gz"], "named both"),
])
def test_files_that_do_not_make_a_sample_refuse_it_when_selected_with_the_reason(listing, why):
    lake = Lake({RUN: [*listing, "B_R1.fastq.gz"]})
    assert plan(lake, input_uri=RUN, samples=["B"])["todo"] == ["B"], "another sample is not held up"
    with pytest.raises(RunConfigError, match=re.escape(why)):
        plan(lake, input_uri=RUN, samples=["A", "B"])


def test_a_run_folder_is_listed_once_and_its_summary_says_what_was_found(tmp_path):
    lake = Lake({RUN: bcl_convert_listing(tmp_path, split=True)})
    planned = plan(lake, input_uri=RUN, samples=["LIVER_1", "GSM1"])
    assert lake.listed.count(RUN) == 1
    assert planned["inputs"].startswith(f"found 2 sample(s) under {RUN}: 1 paired-end, 1 single-end, 2 with "
                                        "several lanes; 12 FASTQ file(s); ignored 8 file(s): Undetermined_S0_L001")
    assert planned["inputs"].endswith("; 3 other file(s), not FASTQ (reports, logs ...)")
    assert SampleReads.from_json(planned["reads"]["GSM1"]).r2 is None


def test_all_found_takes_every_sample_of_the_run_folder_and_all_approved_still_means_the_registry(tmp_path):
    lake = Lake({RUN: bcl_convert_listing(tmp_path, split=True)})
    assert plan(lake, input_uri=RUN, samples=ALL_FOUND)["samples"] == ["GSM1", "LIVER_1"]
    assert plan(lake, input_uri=RUN, approved=["GSM1"])["samples"] == ["GSM1"]
    with pytest.raises(RunConfigError, match=r"1 sample\(s\) have no reads .*\['OTHER'\]"):
        plan(lake, input_uri=RUN, approved=["GSM1", "OTHER"])
