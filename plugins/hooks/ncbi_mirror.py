"""A LOCAL STAND-IN for NCBI, for the local backend: answers E-utilities requests from a mirror directory.

It is not NCBI and does not pretend to search like it. It serves the documents it holds in the documented
esearch / esummary JSON formats, so the client, its rate limiting and the parsing run unchanged:

- esearch db=gds: the GEO series whose publication date (pdat) lies in [mindate, maxdate]; the free-text part
  of the term is NOT evaluated (every series in the mirror matches it);
- esearch db=sra: the experiments matching a term of clauses joined by OR, each as NCBI reads it:
  ``<SRP|SRX|SRS|SRR>[Accession]`` (the experiment's study, itself, its sample or one of its runs),
  ``<PRJNA...>[BioProject]`` (the ``<Bioproject>`` of its expxml) and ``<word>[All Fields]`` (anywhere in its
  expxml or runs); a term of any other shape is refused, so a client building odd terms is noticed;
- both keep their result on a history server (WebEnv + query_key), which esummary pages through.

Layout (``genomics_steps.synthetic_geo`` writes it; ``genomics_steps.ingest`` reads the archives):

    <mirror>/README.txt                 says what this directory is
    <mirror>/gds/<GSE>.json             db=gds esummary documents
    <mirror>/sra/<SRX>.json             db=sra esummary documents (expxml and runs are XML fragments)
    <mirror>/sra-archives/<SRR>.sra     SRA archives, read by fasterq-dump as prefetch's would be
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

_WEBENV = itertools.count(1)


def _date(value: str) -> str:
    return datetime.strptime(value, "%Y/%m/%d").strftime("%Y/%m/%d")


_CLAUSE = re.compile(r"\s*([A-Za-z0-9_.-]+)\[(Accession|BioProject|All Fields)\]\s*", re.IGNORECASE)


def _sra_clauses(term: str) -> list[tuple[str, str]] | None:
    """``[(value, field)]`` of a term of clauses joined by OR, or None if the term has another shape."""
    clauses = []
    for part in term.split(" OR "):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            return None
        clauses.append((match.group(1).upper(), match.group(2).lower()))
    return clauses


def _sra_matches(doc: dict[str, Any], clauses: list[tuple[str, str]]) -> bool:
    expxml, runs = doc.get("expxml", ""), doc.get("runs", "")
    accessions = set(re.findall(r'<(?:Study|Experiment|Sample) acc="([^"]+)"', expxml))
    accessions |= set(re.findall(r'<Run acc="([^"]+)"', runs))
    bioprojects = set(re.findall(r"<Bioproject>\s*([^<\s]+)\s*</Bioproject>", expxml))
    words = set(re.findall(r"[A-Z0-9]+", (expxml + runs).upper()))
    return any(value in {"accession": accessions, "bioproject": bioprojects, "all fields": words}[field]
               for value, field in clauses)


class MirrorTransport:
    """Callable like hooks.eutils.HttpTransport, over a mirror directory."""

    def __init__(self, mirror: Path):
        self.mirror = Path(mirror)
        self.history: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, utility: str, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.calls.append((utility, dict(params)))
        if utility == "esearch":
            return self._esearch(params)
        if utility == "esummary":
            return self._esummary(params)
        return 400, {}, json.dumps({"error": f"the local mirror serves esearch and esummary, not {utility}"}).encode()

    def _documents(self, db: str) -> list[dict[str, Any]]:
        folder = self.mirror / db
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def _esearch(self, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        db, term = params.get("db"), params.get("term", "")
        if db == "gds":
            low, high = _date(params["mindate"]), _date(params["maxdate"])
            hits = [d for d in self._documents("gds") if d.get("entrytype") == "GSE" and low <= d["pdat"] <= high]
        elif db == "sra":
            clauses = _sra_clauses(term)
            if clauses is None:
                return 200, {}, json.dumps({"esearchresult": {"ERROR": f"the local stand-in for NCBI reads only "
                                            f"<accession>[Accession|BioProject|All Fields] clauses joined by "
                                            f"OR, not {term!r}"}}).encode()
            hits = [d for d in self._documents("sra") if _sra_matches(d, clauses)]
        else:
            return 200, {}, json.dumps({"esearchresult": {"ERROR": f"Invalid db name specified: {db}"}}).encode()
        webenv = f"MCID_local_mirror_{next(_WEBENV)}"
        self.history[webenv] = [(d["uid"], d) for d in sorted(hits, key=lambda d: int(d["uid"]))]
        result = {"count": str(len(hits)), "retmax": "0", "retstart": "0", "querykey": "1", "webenv": webenv,
                  "idlist": [], "translationset": [], "querytranslation": term}
        return 200, {}, json.dumps({"header": {"type": "esearch", "version": "0.3"},
                                    "esearchresult": result}).encode()

    def _esummary(self, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        found = self.history.get(params.get("WebEnv", ""))
        if found is None:
            return 200, {}, json.dumps({"error": "Unable to obtain query #1"}).encode()
        start, size = int(params.get("retstart", 0)), int(params.get("retmax", 20))
        page = found[start : start + size]
        result: dict[str, Any] = {"uids": [uid for uid, _ in page]}
        result.update({uid: doc for uid, doc in page})
        return 200, {}, json.dumps({"header": {"type": "esummary", "version": "0.3"}, "result": result}).encode()
