"""Where published tables' SQL runs: Amazon Athena, or DuckDB on this machine.

Both take the same statements (Athena's dialect, from include/sql) with ``?`` execution parameters and a
ClientRequestToken, and report query states with Athena's names (QUEUED RUNNING SUCCEEDED FAILED CANCELLED).

The local engine is not a mock: sqlglot parses each statement, DuckDB runs it, tables are Hive-partitioned
Snappy Parquet files under the local lake, and a DuckDB catalog file names them so anyone can SELECT a
published table by name. It also keeps the Athena rules the publish protocol has to live with, so batching and
re-publishing are tested for real on this machine:
- CTAS and INSERT INTO write at most 100 partitions (HIVE_TOO_MANY_OPEN_PARTITIONS);
- a CTAS external_location must be empty (HIVE_PATH_ALREADY_EXISTS), and nothing is overwritten;
- a repeated ClientRequestToken returns the earlier query instead of running the statement again;
- DROP TABLE forgets the table but leaves its files, as for Athena's external tables.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from genomics_steps.names import check_uri
from hooks.sql_render import Ident, literal_parameter

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
MAX_WRITTEN_PARTITIONS = 100


class QueryFailed(RuntimeError):
    def __init__(self, query_id: str, state: str, reason: str):
        super().__init__(f"query {query_id} {state}: {reason}")
        self.query_id = query_id
        self.state = state
        self.reason = reason


@dataclass(frozen=True)
class QueryStatus:
    query_id: str
    state: str
    reason: str = ""
    scanned_bytes: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class QueryEngine(ABC):
    #: True if start() returns only once the statement has finished (nothing to wait for).
    finishes_on_start = False

    @abstractmethod
    def start(self, sql: str, params: list[Any], token: str) -> str:
        """Start a statement; the same token returns the same query id without running it again."""

    @abstractmethod
    def status(self, query_id: str) -> QueryStatus: ...

    def wait(self, query_id: str, timeout_seconds: float | None = None) -> QueryStatus:
        """Poll (0.2 s, doubling to 5 s) until the query ends; raises QueryFailed if it outlasts the timeout."""
        delay = 0.2
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while not (status := self.status(query_id)).terminal:
            if deadline is not None and time.monotonic() > deadline:
                raise QueryFailed(query_id, status.state, f"still {status.state} after {timeout_seconds:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        return status

    def run(self, sql: str, params: list[Any], token: str, timeout_seconds: float = 600.0) -> QueryStatus:
        """Start and wait (for short statements: DDL, views); raises QueryFailed unless it succeeded."""
        query_id = self.start(sql, params, token)
        status = self.wait(query_id, timeout_seconds)
        if status.state != "SUCCEEDED":
            raise QueryFailed(query_id, status.state, status.reason)
        return status


# --- Athena ------------------------------------------------------------------------------------------
class AthenaQueryEngine(QueryEngine):
    def __init__(self, client: Any, *, database: str, workgroup: str, output_location: str | None):
        self.client = client
        self.database = database
        self.workgroup = workgroup
        self.output_location = output_location

    def start(self, sql: str, params: list[Any], token: str) -> str:
        kwargs: dict[str, Any] = {
            "QueryString": sql,
            "ClientRequestToken": token,
            "QueryExecutionContext": {"Database": self.database},
            "WorkGroup": self.workgroup,
        }
        if params:
            kwargs["ExecutionParameters"] = [literal_parameter(p) for p in params]
        if self.output_location:
            kwargs["ResultConfiguration"] = {"OutputLocation": self.output_location}
        return self.client.start_query_execution(**kwargs)["QueryExecutionId"]

    def status(self, query_id: str) -> QueryStatus:
        execution = self.client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        state = execution["Status"]["State"]
        reason = execution["Status"].get("StateChangeReason", "")
        scanned = execution.get("Statistics", {}).get("DataScannedInBytes", 0)
        return QueryStatus(query_id, state, reason, scanned)


# --- DuckDB ------------------------------------------------------------------------------------------
def _path(uri: str) -> Path:
    parsed = urlparse(check_uri("location", uri))
    if parsed.scheme != "file":
        raise ValueError(f"the local engine reads and writes file:// locations only, got {uri!r}")
    return Path(unquote(parsed.path))


def _has_files(root: Path) -> bool:
    return root.is_dir() and any(p.is_file() and not p.name.startswith((".", "_")) for p in root.rglob("*"))


class LocalQueryEngine(QueryEngine):
    """DuckDB behind Athena's API. One short-lived connection per call, so several processes can share it."""

    finishes_on_start = True

    def __init__(self, catalog_path: str | Path, *, database: str):
        self.catalog_path = Path(catalog_path)
        self.database = Ident(database).value

    # -- API -------------------------------------------------------------------------------------------
    def start(self, sql: str, params: list[Any], token: str) -> str:
        with self._connect() as con:
            row = con.execute("SELECT query_id, sql, params FROM _engine.queries WHERE token = ?", [token]).fetchone()
            if row:
                if row[1] != sql or row[2] != json.dumps(params):
                    raise ValueError(f"ClientRequestToken {token} was used before for a different statement "
                                     "(Athena answers IdempotentParameterMismatch)")
                return row[0]
            query_id = str(uuid.uuid4())
            state, reason = "SUCCEEDED", ""
            con.execute("BEGIN TRANSACTION")
            try:
                self._execute(con, sql, params, query_id)
                con.execute("COMMIT")
            except Exception as exc:  # any failure becomes the query's state, as Athena reports it
                con.execute("ROLLBACK")
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                state, reason = "FAILED", message if isinstance(exc, ValueError) else f"{type(exc).__name__}: {message}"
            con.execute(
                "INSERT INTO _engine.queries VALUES (?, ?, ?, ?, ?, ?, now())",
                [query_id, token, sql, json.dumps(params), state, reason],
            )
            return query_id

    def status(self, query_id: str) -> QueryStatus:
        with self._connect() as con:
            row = con.execute("SELECT state, reason FROM _engine.queries WHERE query_id = ?", [query_id]).fetchone()
        if not row:
            raise KeyError(f"unknown query id {query_id}")
        return QueryStatus(query_id, row[0], row[1])

    def fetch(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a SELECT written in Athena's dialect against the local catalog: (column names, rows)."""
        import sqlglot

        query = sqlglot.transpile(sql, read="athena", write="duckdb")[0]
        with self._connect(read_only=True) as con:
            con.execute(f"SET schema = {_lit(self.database)}")
            cursor = con.execute(query, params or [])
            return [d[0] for d in cursor.description], cursor.fetchall()

    def table_location(self, name: str) -> str | None:
        with self._connect(read_only=True) as con:
            row = con.execute("SELECT location FROM _engine.tables WHERE database = ? AND name = ?",
                              [self.database, name]).fetchone()
        return row[0] if row else None

    # -- plumbing --------------------------------------------------------------------------------------
    def _connect(self, read_only: bool = False):
        import duckdb

        self.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        delay, deadline = 0.05, time.monotonic() + 120
        while True:
            try:
                con = duckdb.connect(str(self.catalog_path), read_only=read_only and self.catalog_path.exists())
                break
            except duckdb.IOException as exc:  # another process holds the catalog's write lock
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        if not read_only:
            con.execute("CREATE SCHEMA IF NOT EXISTS _engine")
            con.execute(
                "CREATE TABLE IF NOT EXISTS _engine.queries (query_id VARCHAR PRIMARY KEY, token VARCHAR UNIQUE, "
                "sql VARCHAR, params VARCHAR, state VARCHAR, reason VARCHAR, finished TIMESTAMP)"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS _engine.tables (database VARCHAR, name VARCHAR, kind VARCHAR, "
                "location VARCHAR, spec VARCHAR, PRIMARY KEY (database, name))"
            )
        return con

    def _execute(self, con: Any, sql: str, params: list[Any], query_id: str) -> None:
        import sqlglot
        from sqlglot import exp

        statement = sqlglot.parse_one(sql, read="athena")
        if isinstance(statement, exp.Create) and statement.args.get("kind") == "VIEW":
            self._create_view(con, statement)
        elif isinstance(statement, exp.Create) and statement.args.get("kind") == "TABLE":
            props = {type(p).__name__: p for p in (statement.args.get("properties") or exp.Properties()).expressions}
            if "ExternalProperty" in props:
                self._create_external(con, statement)
            else:
                self._create_table_as(con, statement, params, query_id)
        elif isinstance(statement, exp.Insert):
            self._insert(con, statement, params, query_id)
        elif isinstance(statement, exp.Drop):
            self._drop(con, statement)
        else:
            raise ValueError(f"the local engine runs CREATE/INSERT/DROP statements only, not {type(statement).__name__}"
                             " (use fetch() for SELECT)")

    def _name(self, table: Any) -> tuple[str, str]:
        database = table.args.get("db").name if table.args.get("db") else self.database
        return database, table.name

    def _registered(self, con: Any, database: str, name: str) -> tuple | None:
        return con.execute("SELECT kind, location, spec FROM _engine.tables WHERE database = ? AND name = ?",
                           [database, name]).fetchone()

    def _register(self, con: Any, database: str, name: str, kind: str, location: str | None,
                  spec: dict[str, Any], view_sql: str) -> None:
        from sqlglot import exp

        con.execute(f"CREATE SCHEMA IF NOT EXISTS {exp.to_identifier(database).sql('duckdb')}")
        con.execute(f"CREATE OR REPLACE VIEW {_qualified(database, name)} AS {view_sql}")
        con.execute("INSERT OR REPLACE INTO _engine.tables VALUES (?, ?, ?, ?, ?)",
                    [database, name, kind, location, json.dumps(spec)])

    # CREATE EXTERNAL TABLE: a view over delimited text files, partitions from the folder names
    def _create_external(self, con: Any, statement: Any) -> None:
        from sqlglot import exp

        schema = statement.this
        database, name = self._name(schema.this)
        if self._registered(con, database, name):
            if statement.args.get("exists"):
                return
            raise ValueError(f"AlreadyExistsException: table {database}.{name} already exists")
        props = statement.args["properties"].expressions
        columns = [(c.name, c.args["kind"].sql("duckdb")) for c in schema.expressions]
        partitions: list[tuple[str, str]] = []
        location, delimiter, skip_header, table_props = None, ",", 0, {}
        for prop in props:
            if isinstance(prop, exp.PartitionedByProperty):
                partitions = [(c.name, c.args["kind"].sql("duckdb")) for c in prop.this.expressions]
            elif isinstance(prop, exp.LocationProperty):
                location = prop.this.name
            elif isinstance(prop, exp.RowFormatDelimitedProperty):
                delimiter = prop.args["fields"].name
            elif isinstance(prop, exp.Property) and prop.args.get("value") is not None:
                table_props[prop.this.name] = prop.args["value"].name
        if not location:
            raise ValueError("an external table needs a LOCATION")
        skip_header = int(table_props.get("skip.header.line.count", "0"))
        root = _path(location)
        typed = {n: t for n, t in columns}
        # read_csv types the columns and hive_types the partitions: no CAST, which would stop DuckDB from
        # pruning partition folders by a WHERE on them
        selected = [_ident(n) for n, _ in columns + partitions]
        # Partition projection with an enum: only the listed values exist, at locations computed from them
        # (Athena lists no folders). Reading exactly those folders also lets DuckDB skip all others, where a
        # long IN filter would not.
        enum = [(c, table_props.get(f"projection.{c}.values", "")) for c, _ in partitions
                if table_props.get(f"projection.{c}.type") == "enum"]
        if len(partitions) == 1 and len(enum) == 1:
            values = [v for v in enum[0][1].split(",") if v]
            paths = "[" + ", ".join(_lit(str(root / f"{enum[0][0]}={v}" / "*")) for v in values) + "]"
        elif enum:
            raise ValueError("the local engine projects one enum partition column; declare one")
        else:
            paths = _lit(str(root / "**" / "*"))
        # Read as Athena's LazySimpleSerDe reads delimited text: no quoting (a quote is a character of the
        # field), and a file staged before a column was added (TableSpec.added) reads NULL there
        # (null_padding; DuckDB pads only with its dialect sniffing off)
        source = "read_csv({paths}, delim={delim}, header={header}, columns={cols}, hive_partitioning=true, " \
                 "hive_types={hive}, auto_detect=false, quote='', escape='', null_padding=true)".format(
                     paths=paths,
                     delim=_lit(delimiter),
                     header="true" if skip_header else "false",
                     cols=_struct(typed),
                     hive=_struct(dict(partitions)) if partitions else "{}",
                 )
        view = f"SELECT {', '.join(selected)} FROM {source}"
        if not _has_files(root):
            view = _empty_select(columns + partitions)
        spec = {"columns": columns, "partitions": partitions, "format": "TEXTFILE"}
        self._register(con, database, name, "EXTERNAL_TABLE", location, spec, view)

    # CTAS: Snappy Parquet (or what write_compression says), Hive-partitioned, into an empty location
    def _create_table_as(self, con: Any, statement: Any, params: list[Any], query_id: str) -> None:
        from sqlglot import exp

        database, name = self._name(statement.this)
        if self._registered(con, database, name):
            raise ValueError(f"AlreadyExistsException: table {database}.{name} already exists")
        options: dict[str, Any] = {}
        for prop in statement.args["properties"].expressions:
            if isinstance(prop, exp.FileFormatProperty):
                options["format"] = prop.this.name.upper()
            elif isinstance(prop, exp.PartitionedByProperty):
                options["partitioned_by"] = [e.name for e in prop.this.expressions]
            elif isinstance(prop, exp.Property) and prop.args.get("value") is not None:
                options[prop.this.name.lower()] = prop.args["value"].name
        if options.get("format", "PARQUET") != "PARQUET":
            raise ValueError("the local engine writes format='PARQUET' tables only")
        location = options.get("external_location")
        if not location:
            raise ValueError("CTAS needs external_location (tables are written to a run-scoped location)")
        root = _path(location)
        if _has_files(root):
            raise ValueError(f"HIVE_PATH_ALREADY_EXISTS: Target directory for table '{database}.{name}' already "
                             f"exists: {location}")
        partitions = options.get("partitioned_by", [])
        columns = self._materialise(con, statement.expression, params, partitions)
        data_columns = [c for c in columns if c[0] not in partitions]
        if [c[0] for c in columns[len(data_columns):]] != partitions:
            raise ValueError("partition columns must be the last columns of the SELECT, in partitioned_by order")
        spec = {"columns": data_columns, "partitions": [c for c in columns if c[0] in partitions],
                "format": "PARQUET", "compression": options.get("write_compression", "SNAPPY").upper()}
        self._write(con, root, spec, query_id, append=False)
        self._register(con, database, name, "TABLE", location, spec, _parquet_view(root, spec))

    def _insert(self, con: Any, statement: Any, params: list[Any], query_id: str) -> None:
        database, name = self._name(statement.this)
        found = self._registered(con, database, name)
        if not found or found[0] != "TABLE":
            raise ValueError(f"TABLE_NOT_FOUND: {database}.{name} is not a table this engine wrote")
        spec = json.loads(found[2])
        partitions = [p[0] for p in spec["partitions"]]
        columns = self._materialise(con, statement.expression, params, partitions)
        if len(columns) != len(spec["columns"]) + len(spec["partitions"]):
            raise ValueError(f"INSERT INTO {database}.{name}: the SELECT has {len(columns)} columns, the table "
                             f"{len(spec['columns']) + len(spec['partitions'])}")
        # Athena matches INSERT columns by position: rename the SELECT's columns to the table's
        names = [c[0] for c in spec["columns"]] + partitions
        con.execute(f"CREATE OR REPLACE TEMP TABLE _written AS SELECT "
                    f"{', '.join(f'{_ident(old)} AS {_ident(new)}' for (old, _), new in zip(columns, names))} "
                    "FROM _statement")
        con.execute("DROP TABLE _statement")
        con.execute("ALTER TABLE _written RENAME TO _statement")
        root = _path(found[1])
        self._write(con, root, spec, query_id, append=True)
        self._register(con, database, name, "TABLE", found[1], spec, _parquet_view(root, spec))

    def _materialise(self, con: Any, select: Any, params: list[Any], partitions: list[str]) -> list[tuple[str, str]]:
        """Run the SELECT into a temporary table and refuse more than 100 partitions, before writing a file."""
        query = select.sql(dialect="duckdb")
        con.execute(f"SET schema = {_lit(self.database)}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _statement AS {query}", params)
        if partitions:
            count = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(map(_ident, partitions))} "
                                "FROM _statement)").fetchone()[0]
            if count > MAX_WRITTEN_PARTITIONS:
                raise ValueError(f"HIVE_TOO_MANY_OPEN_PARTITIONS: Exceeded limit of {MAX_WRITTEN_PARTITIONS} open "
                                 f"writers for partitions/buckets (this statement writes {count} partitions)")
        return [(r[0], r[1]) for r in con.execute("DESCRIBE _statement").fetchall()]

    def _write(self, con: Any, root: Path, spec: dict[str, Any], query_id: str, *, append: bool) -> None:
        rows = con.execute("SELECT count(*) FROM _statement").fetchone()[0]
        if rows == 0:
            return
        root.mkdir(parents=True, exist_ok=True)
        options = [f"FORMAT PARQUET, COMPRESSION {spec['compression']}",
                   f"FILENAME_PATTERN {_lit(query_id.replace('-', '') + '_{uuid}')}"]
        if spec["partitions"]:
            options.append(f"PARTITION_BY ({', '.join(_ident(p[0]) for p in spec['partitions'])})")
            options.append("APPEND" if append else "OVERWRITE_OR_IGNORE")
            con.execute(f"COPY _statement TO {_lit(str(root))} ({', '.join(options)})")
        else:
            con.execute(f"COPY _statement TO {_lit(str(root / (query_id + '.parquet')))} "
                        f"(FORMAT PARQUET, COMPRESSION {spec['compression']})")

    def _create_view(self, con: Any, statement: Any) -> None:
        database, name = self._name(statement.this)
        found = self._registered(con, database, name)
        if found and found[0] != "VIEW":
            raise ValueError(f"{database}.{name} is a table, not a view")
        if found and not statement.args.get("replace"):
            raise ValueError(f"AlreadyExistsException: view {database}.{name} already exists")
        con.execute(f"SET schema = {_lit(database)}")
        self._register(con, database, name, "VIEW", None, {}, statement.expression.sql(dialect="duckdb"))

    def _drop(self, con: Any, statement: Any) -> None:
        tables = statement.args.get("tables") or [statement.this]
        if len(tables) != 1:
            raise ValueError("DROP one table at a time")
        database, name = self._name(tables[0])
        found = self._registered(con, database, name)
        if not found:
            if statement.args.get("exists"):
                return
            raise ValueError(f"TABLE_NOT_FOUND: {database}.{name} does not exist")
        con.execute(f"DROP VIEW IF EXISTS {_qualified(database, name)}")
        con.execute("DELETE FROM _engine.tables WHERE database = ? AND name = ?", [database, name])


def _ident(name: str) -> str:
    from sqlglot import exp

    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _qualified(database: str, name: str) -> str:
    return f"{_ident(database)}.{_ident(name)}"


def _lit(value: str) -> str:
    from sqlglot import exp

    return exp.Literal.string(value).sql("duckdb")


def _struct(types: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_lit(n)}: {_lit(t)}" for n, t in types.items()) + "}"


def _empty_select(columns: list[tuple[str, str]]) -> str:
    return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {_ident(n)}" for n, t in columns) + " WHERE false"


def _parquet_view(root: Path, spec: dict[str, Any]) -> str:
    columns = spec["columns"] + spec["partitions"]
    if not _has_files(root):
        return _empty_select(columns)
    source = "read_parquet({glob}, hive_partitioning={hive}{types})".format(
        glob=_lit(str(root / "**" / "*.parquet")),
        hive="true" if spec["partitions"] else "false",
        types=f", hive_types={_struct(dict(spec['partitions']))}" if spec["partitions"] else "",
    )
    return f"SELECT {', '.join(_ident(n) for n, _ in columns)} FROM {source}"
