"""Give the approved samples of the named projects the approval time the registry did not keep before
(``approved_at``), once, after deploying the ``by_approval`` index (see hooks/sample_registry.py for what the
time is taken from). With the deployment's settings (GENOMICS_* in the environment):

    PYTHONPATH=plugins:include python3 scripts/fill_approved_at.py geo demo

Running it again fills nothing. A local (SQLite) registry fills itself when first opened.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "include")]

from genomics_steps.names import LABEL  # noqa: E402
from hooks import backend  # noqa: E402
from platform_settings import PlatformSettings  # noqa: E402


def main(projects: list[str]) -> int:
    if not projects:
        print(__doc__, file=sys.stderr)
        return 2
    bad = [LABEL.problem("project", p) for p in projects if not LABEL.ok(p)]
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 2
    registry = backend.sample_registry(PlatformSettings.resolve(use_airflow_variable=False))
    for project in projects:
        print(f"{project}: {registry.fill_approved_at(project)} approved sample(s) given an approval time")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
