"""Which FASTQ files are a sample's reads: from an nf-core style samplesheet, or found in a folder such as a
BCL Convert output. The plan (in Airflow) decides every sample's reads with this module before any job runs and
writes them to the run's reads manifest (``layout.reads_manifest_uri``); the first step of each pipeline reads
its sample's entry there (``Step.sample_reads``). Standard library only: the job images import it too.

A sample's reads are its R1 files and its R2 files (none: single-end), in lane (or run) order; the step joins
several lane files of a mate by appending them (gzip members concatenate into a valid gzip file).

Samplesheet (CSV, a header line, one row per FASTQ file pair)::

    sample,fastq_1,fastq_2,lane,strandedness
    LIVER_1,run1/LIVER_1_S1_L001_R1_001.fastq.gz,run1/LIVER_1_S1_L001_R2_001.fastq.gz,1,reverse

- ``sample``, ``fastq_1``, ``fastq_2`` are required columns; ``fastq_2`` empty means single-end.
- ``lane`` (a positive integer) or ``run`` (a name) orders several rows of one sample; without them the rows
  are read in the sheet's order.
- ``strandedness`` (rnaseq only): ``unstranded``, ``forward``, ``reverse`` or ``auto`` (empty: auto), one value
  per sample; see SALMON_LIBRARY_TYPES.
- A FASTQ is a URI (s3://, file://) or a path relative to the sheet's folder; it must be gzipped
  (.fastq.gz or .fq.gz).
- Values are taken as written: a space or a hidden newline around a value is refused, not trimmed away.

Folder discovery (one listing of the prefix, sub-folders included) knows two namings:

- Illumina's (BCL Convert, bcl2fastq): ``<SampleID>_S<n>_L<lane:3 digits>_R<1|2>_001.fastq.gz``, or without
  ``_L<lane>`` when lanes were not split, at the top or in a per-project sub-folder (``<Sample_Project>/``);
  ``Undetermined_S0_*`` and index reads (``_I1_``, ``_I2_``) are ignored;
- this project's own: ``<sample>_R1.fastq.gz`` and ``<sample>_R2.fastq.gz``.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from genomics_steps.names import FASTQ_PATH, FASTQ_URI, LABEL, SAMPLE_ID

REQUIRED_COLUMNS = ("sample", "fastq_1", "fastq_2")
OPTIONAL_COLUMNS = ("lane", "run", "strandedness")
STRANDEDNESS = ("unstranded", "forward", "reverse", "auto")
# nf-core's strandedness words as salmon library types (salmon's -l): the mates point Inward, the library is
# Stranded with read 1 from the Forward or Reverse strand, or Unstranded; a single-end library has no I.
# "forward" is e.g. a ligation kit, "reverse" dUTP kits such as Illumina TruSeq Stranded; "auto" lets salmon infer.
SALMON_LIBRARY_TYPES = {
    ("unstranded", True): "IU", ("unstranded", False): "U",
    ("forward", True): "ISF", ("forward", False): "SF",
    ("reverse", True): "ISR", ("reverse", False): "SR",
    ("auto", True): "A", ("auto", False): "A",
}
MAX_SHEET_BYTES = 16 * 1024 * 1024

_ILLUMINA = re.compile(r"(?P<sample>.+)_S(?P<number>[0-9]+)(?:_L(?P<lane>[0-9]{3}))?_(?P<read>[RI][0-9])_001"
                       r"\.fastq\.gz")
_OWN = re.compile(r"(?P<sample>.+)_(?P<read>R[12])\.fastq\.gz")
_FASTQ_LIKE = re.compile(r".*\.f(?:ast)?q(?:\.[A-Za-z0-9]+)?")


@dataclass(frozen=True)
class SampleReads:
    """One sample's reads: URIs of its R1 files and of its R2 files (None: single-end), in lane order."""

    r1: tuple[str, ...]
    r2: tuple[str, ...] | None = None
    strandedness: str | None = None  # rnaseq only; None: auto

    @property
    def paired(self) -> bool:
        return self.r2 is not None

    def salmon_library_type(self) -> str:
        return SALMON_LIBRARY_TYPES[(self.strandedness or "auto", self.paired)]

    def to_json(self) -> dict:
        return {"r1": list(self.r1), "r2": None if self.r2 is None else list(self.r2),
                "strandedness": self.strandedness}

    @classmethod
    def from_json(cls, document: dict) -> SampleReads:
        r2 = document.get("r2")
        return cls(tuple(document["r1"]), None if r2 is None else tuple(r2), document.get("strandedness"))


def _folder(uri: str) -> str:
    return uri.rsplit("/", 1)[0] + "/"


# --- discovery ---------------------------------------------------------------------------------------
@dataclass
class Found:
    """What one listing of an input prefix holds: samples with their reads, samples whose files do not make
    a sample (why), and the FASTQ-like files ignored (why)."""

    prefix: str
    samples: dict[str, SampleReads]
    broken: dict[str, str]
    ignored: list[tuple[str, str]]
    other_files: int

    def summary(self) -> str:
        paired = sum(r.paired for r in self.samples.values())
        files = sum(len(r.r1) + len(r.r2 or ()) for r in self.samples.values())
        split = sum(len(r.r1) > 1 for r in self.samples.values())
        text = (f"found {len(self.samples)} sample(s) under {self.prefix}: {paired} paired-end, "
                f"{len(self.samples) - paired} single-end, {split} with several lanes; {files} FASTQ file(s)")
        if self.broken:
            text += f"; {len(self.broken)} unusable: " + "; ".join(f"{s} ({why})" for s, why in
                                                                     sorted(self.broken.items())[:5])
        if self.ignored:
            text += f"; ignored {len(self.ignored)} file(s): " + ", ".join(f"{p} ({why})" for p, why in
                                                                         self.ignored[:5])
            text += " ..." if len(self.ignored) > 5 else ""
        return text + f"; {self.other_files} other file(s), not FASTQ (reports, logs ...)"


def discover(prefix: str, listing: list[str]) -> Found:
    """The samples in one listing of ``prefix`` (paths relative to it, sub-folders included)."""
    base = prefix if prefix.endswith("/") else prefix + "/"
    # (sample) -> folder -> [(lane or None, read, path, naming)]
    files: dict[str, dict[str, list[tuple[int | None, str, str, str]]]] = {}
    ignored: list[tuple[str, str]] = []
    other = 0
    for path in sorted(listing):
        folder, _, name = path.rpartition("/")
        match, naming = _ILLUMINA.fullmatch(name), "illumina"
        if match is None:
            match, naming = _OWN.fullmatch(name), "own"
        if match is None:
            if _FASTQ_LIKE.fullmatch(name):
                ignored.append((path, "not a gzipped FASTQ" if not name.endswith(".gz") else
                                "named neither <sample>_S<n>[_L<lane>]_R1_001.fastq.gz nor <sample>_R1.fastq.gz"))
            else:
                other += 1
            continue
        sample, read = match.group("sample"), match.group("read")
        if sample == "Undetermined":
            ignored.append((path, "undetermined reads"))
        elif read not in ("R1", "R2"):
            ignored.append((path, "index read" if read.startswith("I") else f"read {read}"))
        elif not SAMPLE_ID.ok(sample):
            ignored.append((path, f"{sample!r} is not {SAMPLE_ID.description}"))
        else:
            lane = match.groupdict().get("lane")
            files.setdefault(sample, {}).setdefault(folder, []).append(
                (int(lane) if lane else None, read, path, naming))

    samples: dict[str, SampleReads] = {}
    broken: dict[str, str] = {}
    for sample, folders in files.items():
        if len(folders) > 1:
            broken[sample] = "in several folders: " + ", ".join(f"{f or '.'}/" for f in sorted(folders))
            continue
        entries = next(iter(folders.values()))
        reads, why = _lanes(entries)
        if why:
            broken[sample] = why
        else:
            samples[sample] = SampleReads(tuple(base + p for p in reads["R1"]),
                                          tuple(base + p for p in reads["R2"]) if reads["R2"] else None)
    return Found(base, samples, broken, ignored, other)


def _lanes(entries: list[tuple[int | None, str, str, str]]) -> tuple[dict[str, list[str]], str | None]:
    """One sample's files of one folder as R1 and R2 paths in lane order, or why they are not a sample."""
    if len({naming for *_, naming in entries}) > 1:
        return {}, "named both <sample>_R1.fastq.gz and the Illumina way"
    by_read: dict[str, dict[int | None, str]] = {"R1": {}, "R2": {}}
    for lane, read, path, _ in entries:
        if lane in by_read[read]:
            return {}, f"two {read} files for {'lane ' + str(lane) if lane else 'one sample'}: " \
                       f"{by_read[read][lane]}, {path}"
        by_read[read][lane] = path
    lanes = set(by_read["R1"]) | set(by_read["R2"])
    if None in lanes and len(lanes) > 1:
        return {}, "files with and without a lane number"
    if not by_read["R1"]:
        return {}, "R2 without R1"
    if by_read["R2"] and set(by_read["R1"]) != set(by_read["R2"]):
        return {}, f"R1 lanes {sorted(by_read['R1'])} differ from R2 lanes {sorted(by_read['R2'])}"
    order = sorted(by_read["R1"], key=lambda lane: lane or 0)
    return {read: [by_read[read][lane] for lane in order if lane in by_read[read]] for read in by_read}, None


# --- samplesheet -------------------------------------------------------------------------------------
@dataclass
class Sheet:
    """A parsed samplesheet: every sample's reads, and every problem found (``line N: ...``)."""

    uri: str
    samples: dict[str, SampleReads]
    problems: list[str]
    origin: dict[str, str]  # file URI -> where the sheet names it ("line 3 fastq_1")


def parse_samplesheet(uri: str, text: str, *, strandedness: bool = True, local_files: bool = True) -> Sheet:
    """Read a samplesheet; file existence is checked apart (``missing_files``). ``strandedness``: whether the
    pipeline takes that column (rnaseq); ``local_files``: whether file:// FASTQ URIs may be used (not on AWS)."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = cells
            known = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS] if strandedness else \
                [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS[:2]]
            for column in header:
                if column not in known:
                    close = difflib.get_close_matches(column, known, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else f"the columns are {', '.join(known)}"
                    if column == "strandedness":
                        hint = "strandedness is for rnaseq"
                    problems.append(f"line {reader.line_num}: unknown column {column!r}; {hint}")
            for column in REQUIRED_COLUMNS:
                if column not in header:
                    problems.append(f"line {reader.line_num}: missing column {column!r} (required: "
                                    f"{', '.join(REQUIRED_COLUMNS)})")
            if "lane" in header and "run" in header:
                problems.append(f"line {reader.line_num}: give a lane or a run column, not both")
            if len(set(header)) != len(header):
                problems.append(f"line {reader.line_num}: a column is named twice: {header}")
            if problems:
                return Sheet(uri, {}, problems, {})
            continue
        if len(cells) > len(header):
            problems.append(f"line {reader.line_num}: {len(cells)} values for {len(header)} columns")
            continue
        rows.append((reader.line_num, dict(zip(header, cells + [""] * (len(header) - len(cells))))))
    if header is None:
        return Sheet(uri, {}, [f"samplesheet {uri} is empty"], {})
    if not rows and not problems:
        return Sheet(uri, {}, [f"samplesheet {uri} has a header but no samples"], {})

    folder = _folder(uri)
    seen: dict[str, str] = {}  # file URI -> "line N fastq_x"
    per_sample: dict[str, list[tuple[int, object, str, str | None, str]]] = {}
    for line, row in rows:
        sample = row["sample"]
        if not SAMPLE_ID.ok(sample):
            problems.append(f"line {line}: {SAMPLE_ID.problem('sample', sample)}")
        resolved: dict[str, str | None] = {}
        for column in ("fastq_1", "fastq_2"):
            value = row[column]
            if not value:
                resolved[column] = None
                if column == "fastq_1":
                    problems.append(f"line {line}: fastq_1 is empty (every row needs its R1 file)")
                continue
            if "://" in value:
                if not FASTQ_URI.ok(value):
                    problems.append(f"line {line}: {FASTQ_URI.problem(column, value)}")
                    continue
                if value.startswith("file://") and not local_files:
                    problems.append(f"line {line}: {column} {value!r} is a local path; Batch jobs on AWS read "
                                    "s3:// URIs")
                    continue
                resolved[column] = value
            elif not FASTQ_PATH.ok(value):
                problems.append(f"line {line}: {FASTQ_PATH.problem(column, value)}")
                continue
            else:
                resolved[column] = folder + value
            where = f"line {line} {column}"
            if resolved[column] in seen:
                problems.append(f"{where}: {value!r} is the same file as {seen[resolved[column]]}")
            else:
                seen[resolved[column]] = where
        order: object = None
        if row.get("lane"):
            if re.fullmatch(r"[1-9][0-9]{0,2}", row["lane"]):
                order = int(row["lane"])
            else:
                problems.append(f"line {line}: lane {row['lane']!r} is not a lane number (1 to 999)")
        elif row.get("run"):
            if LABEL.ok(row["run"]):
                order = row["run"]
            else:
                problems.append(f"line {line}: {LABEL.problem('run', row['run'])}")
        strand = row.get("strandedness") or None
        if strand is not None and strand not in STRANDEDNESS:
            problems.append(f"line {line}: strandedness {strand!r} must be one of {', '.join(STRANDEDNESS)}")
        if resolved.get("fastq_1"):
            per_sample.setdefault(sample, []).append((line, order, resolved["fastq_1"], resolved.get("fastq_2"),
                                                      strand or ""))

    samples: dict[str, SampleReads] = {}
    for sample, entries in per_sample.items():
        lines = ", ".join(str(e[0]) for e in entries)
        paired = [e[0] for e in entries if e[3]]
        if paired and len(paired) != len(entries):
            single = [e[0] for e in entries if not e[3]]
            problems.append(f"lines {lines}: sample {sample!r} mixes paired-end rows (lines "
                            f"{', '.join(map(str, paired))}) and single-end rows (lines {', '.join(map(str, single))})")
            continue
        strands = {e[4] for e in entries}
        if len(strands) > 1:
            problems.append(f"lines {lines}: sample {sample!r} has several strandedness values "
                            f"{sorted(s or '(empty)' for s in strands)}")
        if len(entries) > 1:
            orders = [e[1] for e in entries]
            given = [o for o in orders if o is not None]
            if given and len(given) != len(orders):
                problems.append(f"lines {lines}: sample {sample!r} gives a lane or run on some rows only")
                continue
            if len(set(given)) != len(given):
                problems.append(f"lines {lines}: sample {sample!r} names a lane or run twice")
                continue
            if given:
                entries = sorted(entries, key=lambda e: e[1])
        samples[sample] = SampleReads(tuple(e[2] for e in entries),
                                      tuple(e[3] for e in entries) if paired else None,
                                      (entries[0][4] or None) if strandedness else None)
    return Sheet(uri, samples, problems, seen)


def missing_files(sheet: Sheet, list_files: Callable[[str], list[str]], limit: int = 20) -> list[str]:
    """Problems naming the sheet's FASTQ files absent from the lake (line and column): one listing per folder
    they are in, never one request per file."""
    wanted: dict[str, list[str]] = {}
    for file in sheet.origin:
        wanted.setdefault(_folder(file), []).append(file)
    missing = []
    for folder, files in sorted(wanted.items()):
        present = set(list_files(folder))
        missing += [f for f in files if f[len(folder):] not in present]
    missing.sort(key=lambda f: int(sheet.origin[f].split()[1]))
    problems = [f"{sheet.origin[f]}: {f} is not in the lake" for f in missing[:limit]]
    if len(missing) > limit:
        problems.append(f"... and {len(missing) - limit} more FASTQ file(s) of the samplesheet not in the lake")
    return problems
