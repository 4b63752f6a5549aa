"""Query the local engine's published tables by name, in Athena's SQL: ./dev sql "SELECT * FROM qc_metrics"

Tables live in the schema named by the `database` setting (default genomics), which is also the default
schema here. Nothing is written: the catalog is opened read-only.
"""

from __future__ import annotations

import sys

from hooks import backend
from platform_settings import PlatformSettings


def show(sql: str, limit: int = 50) -> None:
    settings = PlatformSettings.resolve(use_airflow_variable=False)
    columns, rows = backend.query_engine(settings).fetch(sql)
    widths = [max([len(c)] + [len(_cell(r[i])) for r in rows[:limit]]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows[:limit]:
        print("  ".join(_cell(v).ljust(w) for v, w in zip(row, widths)))
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more rows")


def _cell(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip())
        return 2
    settings = PlatformSettings.resolve(use_airflow_variable=False)
    if settings.backend != "local":
        print("./dev sql queries the local engine; on AWS use Athena (same SQL, same table names)")
        return 2
    show(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
