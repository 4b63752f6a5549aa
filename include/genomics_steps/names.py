"""Every rule for names, ids and URIs, in one place: the DAGs' Params, planning, the operator and sensor, SQL
rendering, the lake helpers and the steps inside jobs all check values here (standard library only, so the job
images import the same file Airflow does).

Every check is a full match. ``re.match`` with ``^...$`` is not: ``$`` also matches before a final newline, so
``"demo\\n"`` would pass as a project and ``urlparse`` would later drop the newline while building a path,
writing into the real ``demo``'s folders. Here a Rule compiles its body once for ``fullmatch`` and derives the
JSON-schema ``pattern`` of a Param from the same body (see ``Rule.schema``).

Lengths: a LABEL (project, reference, pipeline version, pipeline, step, trait) is at most 64 characters, short
enough for Batch job names (128) that join several of them; a SAMPLE_ID is at most 128, as sequencing
facilities name samples. SQL string labels take either, so they are checked against SAMPLE_ID's rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# The pipelines cut runs into array jobs of at most ARRAY_CHUNK samples. (Batch's own limit of 10,000 children
# is batch_model.MAX_ARRAY_SIZE: the local runner, which cannot import this package, enforces it too.)
ARRAY_CHUNK = 500

# The end of the string, read the same way by Python's re.search (what jsonschema runs) and by a JavaScript
# RegExp without flags: nothing at all may follow. (Python's \Z is the letter Z to JavaScript, and Python's $
# also matches before a final newline.)
_END = r"(?![\s\S])"


class InvalidName(ValueError):
    """A value broke its naming rule; the message names the field and shows the value with repr()."""


@dataclass(frozen=True)
class Rule:
    body: str  # the regular expression, without anchors
    noun: str  # what a value is ("sample id")
    description: str  # what a valid value looks like, in words
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.body))

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and self.compiled.fullmatch(value) is not None

    def problem(self, name: str, value: Any) -> str | None:
        """None if ``value`` is valid, else a message naming the field and showing the value."""
        if self.ok(value):
            return None
        return f"{name} {value!r} is not {self.description}"

    def check(self, name: str, value: Any) -> str:
        """``value`` if valid; InvalidName naming the field and the value otherwise."""
        message = self.problem(name, value)
        if message:
            raise InvalidName(message)
        return value

    def schema(self, *, optional: bool = False, alternatives: tuple[str, ...] = ()) -> str:
        """The JSON-schema ``pattern`` of a Param: the whole value must match, in Python and JavaScript alike.
        ``optional`` also accepts the empty string; ``alternatives`` are literal values also accepted."""
        options = "|".join([*map(re.escape, alternatives), self.body])
        return f"^(?:{options}){'?' if optional else ''}{_END}"


_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]"
_BUCKET = r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
_PART = r"/[A-Za-z0-9_.=+\-]+"

LABEL = Rule(_NAME + "{0,63}", "name", "a name of 1 to 64 letters, digits and _ . - starting with a letter or digit")
SAMPLE_ID = Rule(_NAME + "{0,127}", "sample id",
                 "a sample id of 1 to 128 letters, digits and _ . - starting with a letter or digit")
SQL_IDENT = Rule(r"[a-z][a-z0-9_]{0,127}", "SQL identifier",
                 "a SQL identifier of 1 to 128 lower-case letters, digits and _ starting with a letter")
SQL_TEMPLATE = Rule(r"[a-z0-9_]+/[a-z0-9_]+", "SQL file name",
                    "an SQL file name <area>/<action> (lower-case letters, digits, _)")
ENV_NAME = Rule(r"[A-Za-z_][A-Za-z0-9_]{0,254}", "environment variable name",
                "an environment variable name (letters, digits, _)")
JOB_ID = Rule(r"[0-9a-fA-F\-]{36}(?::[0-9]{1,5})?", "Batch job id",
              "a Batch job id (a UUID, optionally :<array index>)")
# A prefix ends in '/'; a file URI does not. Path parts are letters, digits and _ . = + -.
LOCATION = Rule(f"(?:{_BUCKET}|file://)(?:{_PART})*/", "prefix",
                "an s3:// or file:// prefix ending in '/' (letters, digits and _ . = + - in path parts)")
FILE_URI = Rule(f"(?:{_BUCKET}|file://)(?:{_PART})+", "file URI",
                "an s3:// or file:// URI of a file (letters, digits and _ . = + - in path parts)")
# A samplesheet: a .csv file in the lake (s3:// on AWS, file:// locally).
SAMPLESHEET = Rule(f"(?:{_BUCKET}|file://)(?:{_PART})*/[A-Za-z0-9_.=+\\-]+\\.csv", "samplesheet URI",
                   "an s3:// or file:// URI of a .csv file (letters, digits and _ . = + - in path parts)")
# A samplesheet's fastq_1 / fastq_2: a gzipped FASTQ, as a URI or a path relative to the sheet's folder (no
# '.' or '..' parts: a sheet names files at or below its folder, or gives a full URI).
FASTQ_URI = Rule(f"(?:{_BUCKET}|file://)(?:{_PART})*/[A-Za-z0-9_.=+\\-]+\\.f(?:ast)?q\\.gz", "FASTQ URI",
                 "an s3:// or file:// URI of a .fastq.gz or .fq.gz file")
FASTQ_PATH = Rule(r"(?:(?!\.\.?/)[A-Za-z0-9_.=+\-]+/)*[A-Za-z0-9_.=+\-]+\.f(?:ast)?q\.gz", "FASTQ path",
                  "a .fastq.gz or .fq.gz path relative to the samplesheet's folder (letters, digits and _ . = + -; "
                  "no '.' or '..' parts) or an s3:// or file:// URI")
# Any lake URI the code builds or reads: printable ASCII without space, '?' or '#' (which urlparse would cut
# off as query or fragment); percent escapes are allowed (Path.as_uri writes them) and checked once decoded.
LAKE_URI = Rule(f"(?:{_BUCKET}|file://)(?:/[!\"$->@-~]*)?", "lake URI",
                "an s3:// or file:// URI of printable characters without spaces, '?' or '#'")
GSE = Rule(r"GSE[0-9]{1,12}", "GEO series accession", "a GEO series accession (GSE and digits)")
GSM = Rule(r"GSM[0-9]{1,12}", "GEO sample accession", "a GEO sample accession (GSM and digits)")
SRA_STUDY = Rule(r"[SED]RP[0-9]{1,12}", "SRA study accession",
                 "an SRA study accession (SRP, ERP or DRP and digits)")
SRA_RUN = Rule(r"[SED]RR[0-9]{1,12}", "SRA run accession",
               "an SRA run accession (SRR, ERR or DRR and digits)")
# A Batch job definition, name or name:revision (the GWAS run picks its regenie image by it).
JOB_DEFINITION = Rule(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}(?::[1-9][0-9]{0,8})?", "job definition",
                      "a Batch job definition name (letters, digits, _ -) or name:revision")
# Genotypes given as a VCF (bgzipped) or BCF, which regenie_gwas's step 1 converts with plink2; the name says
# which (a file URI whose last part ends in .vcf.gz or .bcf).
GENOTYPES_VCF = Rule(FILE_URI.body + r"\.(?:vcf\.gz|bcf)", "VCF URI",
                     "an s3:// or file:// URI of a bgzipped VCF (.vcf.gz) or a BCF (.bcf)")
LOCO_FILE = Rule(r"[A-Za-z0-9_.=+\-]+\.loco(?:\.gz)?", "LOCO file name",
                 "a regenie LOCO file name (<name>.loco or .loco.gz)")
BIOPROJECT = Rule(r"PRJ[DEN][A-Z][0-9]{1,12}", "BioProject accession",
                  "a BioProject accession (PRJNA, PRJEB, PRJDB... and digits)")
# SRA's LIBRARY_STRATEGY vocabulary (RNA-Seq, WGS, WXS, miRNA-Seq, Targeted-Capture, ...)
LIBRARY_STRATEGY = Rule(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}", "library strategy",
                        "an SRA library strategy of 1 to 64 letters, digits and _ - (RNA-Seq, WGS, WXS, ...)")


def check_uri(name: str, uri: Any) -> str:
    """A lake URI that urlparse and unquote will read whole: InvalidName for control characters, spaces, a
    query or fragment, another scheme, or percent escapes that decode to something unprintable."""
    LAKE_URI.check(name, uri)
    if not unquote(uri).isprintable():
        raise InvalidName(f"{name} {uri!r} decodes to unprintable characters")
    return uri


def problems_in(checks: list[tuple[Rule, str, Any]]) -> list[str]:
    """Messages for every (rule, field, value) that fails, in order."""
    return [m for rule, name, value in checks if (m := rule.problem(name, value))]


def bad_items(rule: Rule, name: str, values: Any) -> str | None:
    """A message naming the invalid items of a list (up to 5, with repr()), or None if all are valid."""
    bad = [v for v in values if not rule.ok(v)]
    if not bad:
        return None
    return f"{name}: invalid {rule.noun}(s) {bad[:5]!r}: each must be {rule.description}"


# A pasted list of ids (the trigger form's text box): items separated by commas or line breaks, blanks and
# whitespace around each item ignored. LIST_SEPARATORS splits it; Rule-based list_schema() gives the Param's
# pattern, which accepts such a text only if every item is a full match of the rule.
LIST_SEPARATORS = re.compile(r"[,\n]")


def split_list(text: str) -> list[str]:
    """The items of a pasted list, in order, each stripped of whitespace; blank items are dropped."""
    return [item.strip() for item in LIST_SEPARATORS.split(text) if item.strip()]


def list_schema(rule: Rule, *, alternatives: tuple[str, ...] = ()) -> str:
    """The JSON-schema ``pattern`` of a text holding one or more items of ``rule`` separated by commas or line
    breaks (blank lines and surrounding whitespace allowed), or exactly one of ``alternatives``."""
    gap = r"[\s,]*"
    separator = r"[^\S\n]*[,\n]" + gap  # at least one comma or line break; spaces alone do not separate
    items = f"{gap}(?:{rule.body})(?:{separator}(?:{rule.body}))*{gap}"
    options = "|".join([*map(re.escape, alternatives), items])
    return f"^(?:{options}){_END}"
