"""Render the SQL files in include/sql with Jinja, accepting only values that were checked first.

Every value a template prints must be one of the wrapper types below, each validated when it is built:

- ``Ident``: a database, table or column name (lower-case letters, digits, ``_``), printed bare;
- ``Label``: a project, pipeline, version, sample id or phenotype, printed as a quoted SQL string; the pattern
  has no quote, backslash, comma or space, so it cannot leave the string (``LabelList``: several, comma-joined);
- ``Location``: an s3:// or file:// prefix, printed as a quoted SQL string;
- ``int``: printed as a number.

A template that prints anything else (a raw string from a DAG's params, say) fails to render, so a value can
reach SQL text only through a check. Values that Athena accepts as execution parameters (those in WHERE
clauses) are not rendered at all: templates print ``?`` and the values travel beside the statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genomics_steps.names import LOCATION, SAMPLE_ID, SQL_IDENT, SQL_TEMPLATE
from platform_settings import REPO_ROOT

SQL_ROOT = REPO_ROOT / "include" / "sql"
# A string label in SQL is any project, version, trait (LABEL, 64) or sample id (128): the same characters.
SQL_LABEL = SAMPLE_ID


class UnsafeSqlValue(ValueError):
    """A value that would be rendered into SQL text failed its check."""


@dataclass(frozen=True)
class Ident:
    value: str

    def __post_init__(self) -> None:
        if not SQL_IDENT.ok(self.value):
            raise UnsafeSqlValue(SQL_IDENT.problem("SQL identifier", self.value))

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Label:
    value: str

    def __post_init__(self) -> None:
        if not SQL_LABEL.ok(self.value):
            raise UnsafeSqlValue(SQL_LABEL.problem("SQL label", self.value))

    def __str__(self) -> str:
        return f"'{self.value}'"


@dataclass(frozen=True)
class LabelList:
    """Labels printed comma-separated and unquoted, for use inside a quoted property (an enum's values)."""

    values: tuple[str, ...]

    def __post_init__(self) -> None:
        for value in self.values:
            Label(value)

    def __str__(self) -> str:
        return ",".join(self.values)


@dataclass(frozen=True)
class Location:
    value: str

    def __post_init__(self) -> None:
        if not LOCATION.ok(self.value):
            raise UnsafeSqlValue(LOCATION.problem("table location", self.value))

    def __str__(self) -> str:
        return f"'{self.value}'"


_SAFE = (Ident, Label, LabelList, Location)


def _finalize(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (*_SAFE, int)):
        raise UnsafeSqlValue(
            f"refusing to render {value!r} ({type(value).__name__}) into SQL: wrap it in Ident, Label, LabelList or "
            "Location, or pass it as a query parameter"
        )
    return str(value)


_ENV = None


def _environment():
    global _ENV
    if _ENV is None:
        import jinja2

        _ENV = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(SQL_ROOT)),
            undefined=jinja2.StrictUndefined,
            finalize=_finalize,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def template_path(name: str) -> Path:
    """``area/action`` -> include/sql/area/action.sql (which must exist)."""
    path = SQL_ROOT / f"{name}.sql"
    if not SQL_TEMPLATE.ok(name) or not path.is_file():
        raise FileNotFoundError(f"no SQL file include/sql/{name}.sql")
    return path


def render(template: str, /, **context: Any) -> str:
    """Render include/sql/<template>.sql; every printed value must be a checked wrapper (see module docstring)."""
    template_path(template)
    sql = _environment().get_template(f"{template}.sql").render(**context)
    return "\n".join(line.rstrip() for line in sql.strip().splitlines() if line.strip() and not line.startswith("--"))


def literal_parameter(value: Any) -> str:
    """A value as Athena's ExecutionParameters want it: the SQL literal's text (strings quoted, quotes doubled)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"unsupported query parameter {value!r}")
