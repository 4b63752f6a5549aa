"""NCBI E-utilities: find new GEO series in a date window and resolve their samples (GSM) to SRA runs.

The client keeps NCBI's usage rules: at most 3 requests a second, 10 with an API key (``RateLimiter``); every
request names the ``tool`` and an ``email``; a 429, a 5xx or a dropped connection is retried with exponential
backoff (honouring Retry-After); and large result sets go through the history server (esearch with
usehistory=y, then esummary pages by WebEnv and query_key) instead of long id lists in URLs.

The transport is a callable ``(utility, params) -> (status, headers, body)``: ``HttpTransport`` talks to NCBI;
``hooks.ncbi_mirror.MirrorTransport`` answers the same requests from a local directory standing in for NCBI.
Parsing reads the documented JSON formats of esearch and esummary (db=gds, db=sra), so both give the same
records.

    discover(client, query, mindate, maxdate) -> list[GeoSeries]

Per window: one esearch on gds (history), esummary pages of up to ``page_size`` series, then one esearch on sra
per 100 links (history) and esummary pages of their experiments. A series' link to SRA is its BioProject
(the ``bioproject`` field of its summary) and any SRA study its ``extrelations`` name;
recent series often have ``"extrelations": []`` and only the BioProject (see shared/real-data/eutils). A series
with neither is looked up by its GSE accession. Experiments are matched to samples by the GSM that GEO puts in
each experiment's name. Series that are not sequencing (arrays) have no SRA runs and are not looked up. Calls
grow with the number of series / page_size, not with the number of samples.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from genomics_steps.names import BIOPROJECT, GSE, GSM, LIBRARY_STRATEGY, SRA_RUN, SRA_STUDY

BASE_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
RATE_WITHOUT_KEY, RATE_WITH_KEY = 3.0, 10.0
SEQUENCING = "high throughput sequencing"  # in GEO's series type of every sequencing series
TERMS_PER_SEARCH = 100
# A search term: printable text with balanced quotes and parentheses; the window and the entry type are added
# as separate E-utilities parameters and a bracketed clause, never by editing the user's text.
QUERY_MAX = 500

Transport = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]


class EutilsError(RuntimeError):
    """NCBI answered with an error that retrying does not fix, or kept failing after every retry."""


@dataclass
class GeoSample:
    gsm: str
    title: str
    runs: list[str] = field(default_factory=list)
    layout: str = "unknown"  # PAIRED or SINGLE, from the SRA experiment
    organism: str = ""
    bases: int = 0
    strategy: str = ""  # the SRA experiment's LIBRARY_STRATEGY (RNA-Seq, WGS, WXS, ...), "" if none or invalid


@dataclass
class GeoSeries:
    gse: str
    title: str
    published: str  # YYYY-MM-DD (GEO's public release date)
    taxon: str
    series_type: str
    sra_studies: list[str]
    samples: list[GeoSample] = field(default_factory=list)
    bioproject: str = ""  # the series' BioProject (PRJNA...), "" if GEO names none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> GeoSeries:
        """The series ``to_dict`` gave (as the registry keeps an unresolved series for the next run)."""
        return cls(**{**record, "samples": [GeoSample(**s) for s in record.get("samples", [])]})

    @property
    def sequencing(self) -> bool:
        """A sequencing series (its reads are in SRA); array series have no SRA runs to find."""
        return SEQUENCING in self.series_type.lower()

    def sra_terms(self) -> list[str]:
        """The db=sra search clauses that find this series' experiments: its BioProject and SRA studies, or,
        without either, its GSE accession (accessions checked by pattern when parsed: never user text)."""
        terms = [f"{self.bioproject}[BioProject]"] if self.bioproject else []
        terms += [f"{study}[Accession]" for study in self.sra_studies]
        return terms or [f"{self.gse}[All Fields]"]


def check_query(query: Any) -> str:
    """The search term, or ValueError saying what is wrong with it."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty Entrez search term")
    if len(query) > QUERY_MAX:
        raise ValueError(f"query is {len(query)} characters; at most {QUERY_MAX}")
    if any(not ch.isprintable() for ch in query):
        raise ValueError("query holds control characters")
    depth = 0
    for ch in query.replace('"', ""):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth != 0 or query.count('"') % 2:
        raise ValueError(f"query {query!r} has unbalanced parentheses or quotes")
    return query.strip()


class RateLimiter:
    """At most ``rate`` calls per second, spaced evenly (NCBI counts requests per second, not per burst), with
    a 5% margin so network jitter cannot bunch ``rate + 1`` requests into one of NCBI's seconds.
    Thread-safe; ``clock`` and ``sleep`` are injectable so tests measure the spacing without waiting."""

    MARGIN = 1.05

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = self.MARGIN / rate
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


class HttpTransport:
    """GET requests to NCBI over HTTPS (requests is installed with Airflow)."""

    def __init__(self, base_url: str = BASE_URL, timeout: float = 60.0):
        import requests

        self.session = requests.Session()
        self.base_url = base_url
        self.timeout = timeout

    def __call__(self, utility: str, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        response = self.session.get(f"{self.base_url}{utility}.fcgi", params=params, timeout=self.timeout)
        return response.status_code, dict(response.headers), response.content


class EutilsClient:
    """E-utilities calls under NCBI's rate limit, with tool, email and (optionally) api_key on every request."""

    RETRY_STATUS = {429, 500, 502, 503, 504}

    def __init__(self, transport: Transport, *, tool: str, email: str, api_key: str | None = None,
                 max_attempts: int = 6, backoff_seconds: float = 1.0, max_backoff_seconds: float = 60.0,
                 limiter: RateLimiter | None = None, sleep: Callable[[float], None] = time.sleep):
        if not tool or not email or "@" not in email:
            raise ValueError("NCBI asks every E-utilities client to send a tool name and a contact email: set the "
                             "ncbi_eutils connection's login (email), or the ncbi_email setting")
        self.transport = transport
        self.identity = {"tool": tool, "email": email, **({"api_key": api_key} if api_key else {})}
        self.limiter = limiter or RateLimiter(RATE_WITH_KEY if api_key else RATE_WITHOUT_KEY, sleep=sleep)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.sleep = sleep
        self.requests = 0

    def get_json(self, utility: str, **params: Any) -> dict[str, Any]:
        query = {k: str(v) for k, v in params.items() if v is not None}
        query.update(self.identity, retmode="json")
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                status, headers, body = self.transport(utility, query)
            except OSError as exc:  # requests' connection errors and timeouts are OSErrors too
                status, headers, body, problem = 0, {}, b"", f"connection failed: {exc}"
            if status == 200:
                try:
                    document = json.loads(body)
                except ValueError:
                    problem = f"{utility} answered 200 with a body that is not JSON: {body[:200]!r}"
                else:
                    error = _error_of(document)
                    if error is None:
                        return document
                    if "rate limit" not in error.lower() and "temporarily" not in error.lower():
                        raise EutilsError(f"{utility}: NCBI says: {error}")
                    problem = f"{utility}: {error}"
            elif status in self.RETRY_STATUS or status == 0:
                problem = problem if status == 0 else f"{utility} answered HTTP {status}: {body[:200]!r}"
            else:
                raise EutilsError(f"{utility} answered HTTP {status}: {body[:300]!r}")
            if attempt == self.max_attempts:
                break
            self.sleep(self._delay(attempt, headers))
        raise EutilsError(f"{utility} failed after {self.max_attempts} attempts; last: {problem}")

    def _delay(self, attempt: int, headers: dict[str, str]) -> float:
        retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff_seconds)
        base = min(self.backoff_seconds * 2 ** (attempt - 1), self.max_backoff_seconds)
        return base * (0.5 + random.random() / 2)  # jitter: workers retrying together do not stay in step

    # --- the two utilities used ---------------------------------------------------------------------
    def esearch(self, db: str, term: str, *, mindate: date | None = None, maxdate: date | None = None,
                datetype: str = "pdat") -> dict[str, Any]:
        """Search with the history server: returns count, webenv and query_key (no id list is carried)."""
        dates = ({"mindate": mindate.strftime("%Y/%m/%d"), "maxdate": maxdate.strftime("%Y/%m/%d"),
                  "datetype": datetype} if mindate and maxdate else {})
        document = self.get_json("esearch", db=db, term=term, usehistory="y", retmax=0, **dates)
        result = document["esearchresult"]
        return {"count": int(result["count"]), "webenv": result.get("webenv"), "query_key": result.get("querykey")}

    def esummary_pages(self, db: str, found: dict[str, Any], page_size: int = 500, limit: int | None = None):
        """Yield the document summaries of an esearch's history, ``page_size`` a request."""
        total = found["count"] if limit is None else min(found["count"], limit)
        for start in range(0, total, page_size):
            document = self.get_json("esummary", db=db, WebEnv=found["webenv"], query_key=found["query_key"],
                                     retstart=start, retmax=min(page_size, total - start), version="2.0")
            result = document.get("result", {})
            for uid in result.get("uids", []):
                yield result[uid]


def _error_of(document: Any) -> str | None:
    if not isinstance(document, dict):
        return "not a JSON object"
    if document.get("error"):
        return str(document["error"])
    inner = document.get("esearchresult") or document.get("result") or {}
    if isinstance(inner, dict) and inner.get("ERROR"):
        return str(inner["ERROR"])
    return None


# --- parsing the documented formats ----------------------------------------------------------------
def parse_gds_series(doc: dict[str, Any]) -> GeoSeries | None:
    """A GEO series from one db=gds esummary document; None for other entry types (GDS, GPL, GSM)."""
    if doc.get("entrytype") != "GSE" or not GSE.ok(str(doc.get("accession", ""))):
        return None
    published = str(doc.get("pdat", "")).replace("/", "-")
    studies = sorted({rel["targetobject"] for rel in doc.get("extrelations", [])
                      if rel.get("relationtype") == "SRA" and SRA_STUDY.ok(str(rel.get("targetobject", "")))})
    bioproject = str(doc.get("bioproject") or "")
    series = GeoSeries(gse=doc["accession"], title=str(doc.get("title", "")), published=published,
                       taxon=str(doc.get("taxon", "")), series_type=str(doc.get("gdstype", "")),
                       sra_studies=studies, bioproject=bioproject if BIOPROJECT.ok(bioproject) else "")
    series.samples = [GeoSample(gsm=s["accession"], title=str(s.get("title", "")))
                      for s in doc.get("samples", []) if GSM.ok(str(s.get("accession", "")))]
    return series


def parse_sra_experiment(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The GEO sample, layout, organism and runs of one db=sra esummary document (its expxml and runs fields
    are XML fragments). None when the experiment names no GSM (not a GEO submission)."""
    try:
        exp = ET.fromstring(f"<x>{doc.get('expxml', '')}</x>")
        runs = ET.fromstring(f"<x>{doc.get('runs', '')}</x>")
    except ET.ParseError:
        return None
    names = [exp.findtext("Library_descriptor/LIBRARY_NAME") or "",
             (exp.find("Experiment").get("name", "") if exp.find("Experiment") is not None else ""),
             exp.findtext("Summary/Title") or ""]
    gsm = next((m.group(0) for n in names for m in [re.match(r"GSM[0-9]+", n.strip())] if m), None)
    if gsm is None:
        return None
    layout_node = exp.find("Library_descriptor/LIBRARY_LAYOUT")
    layout = next((child.tag for child in layout_node), "unknown") if layout_node is not None else "unknown"
    strategy = (exp.findtext("Library_descriptor/LIBRARY_STRATEGY") or "").strip()
    organism = exp.find("Organism")
    run_list = [(r.get("acc", ""), int(r.get("total_bases") or 0)) for r in runs.findall("Run")
                if SRA_RUN.ok(r.get("acc", "")) and r.get("is_public", "true") == "true"]
    return {"gsm": gsm, "layout": layout, "strategy": strategy if LIBRARY_STRATEGY.ok(strategy) else "",
            "organism": organism.get("ScientificName", "") if organism is not None
            else "", "runs": sorted(acc for acc, _ in run_list), "bases": sum(b for _, b in run_list)}


def discover(client: EutilsClient, query: str, mindate: date, maxdate: date, *, max_series: int = 200,
             page_size: int = 500, also: list[GeoSeries] = ()) -> tuple[list[GeoSeries], int]:
    """GEO series published from ``mindate`` to ``maxdate`` (inclusive) matching ``query``, with each sample's
    SRA runs. Returns (series, total found); at most ``max_series`` series are resolved, oldest accession first.
    ``also``: series found by earlier runs whose runs were not found then; they are looked up again in the same
    SRA searches and returned after the window's series (a series in both is returned once)."""
    term = f"({check_query(query)}) AND gse[Entry Type]"
    found = client.esearch("gds", term, mindate=mindate, maxdate=maxdate)
    series = [s for s in (parse_gds_series(d) for d in client.esummary_pages("gds", found, page_size)) if s]
    series = sorted(series, key=lambda s: int(s.gse[3:]))[:max_series]
    in_window = {s.gse for s in series}
    series += [s for s in also if s.gse not in in_window]
    terms = sorted({t for s in series if s.sequencing and s.samples for t in s.sra_terms()})
    experiments: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()  # a series' BioProject and its study may fall in two searches: count each once
    for i in range(0, len(terms), TERMS_PER_SEARCH):
        found_sra = client.esearch("sra", " OR ".join(terms[i : i + TERMS_PER_SEARCH]))
        for doc in client.esummary_pages("sra", found_sra, page_size):
            uid = str(doc.get("uid", ""))
            if uid and uid in seen:
                continue
            seen.add(uid)
            parsed = parse_sra_experiment(doc)
            if parsed:
                known = experiments.setdefault(parsed["gsm"], {**parsed, "runs": [], "bases": 0})
                known["runs"] = sorted(set(known["runs"]) | set(parsed["runs"]))
                known["bases"] += parsed["bases"]
    for s in series:
        for sample in s.samples:
            exp = experiments.get(sample.gsm)
            if exp:
                sample.runs, sample.layout = exp["runs"], exp["layout"]
                sample.organism, sample.bases = exp["organism"], exp["bases"]
                sample.strategy = exp["strategy"]
    return series, found["count"]
