"""Turn the outputs of the infra/genomics.yaml stack into GENOMICS_* settings, one KEY=VALUE line each, for a
docker-compose .env file (or MWAA's environment variables):

    aws cloudformation describe-stacks --stack-name genomics | python3 scripts/stack_env.py >> .env

Outputs named Genomics<Setting> map to the setting of that name (GenomicsEventQueueUrl -> event_queue_url);
an output naming no setting is an error, so the template and plugins/platform_settings.py cannot drift apart.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))

from platform_settings import PlatformSettings  # noqa: E402

PREFIX = "Genomics"


def setting_name(output_key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", output_key[len(PREFIX):]).lower()


def env_lines(describe_stacks: dict) -> list[str]:
    known = set(PlatformSettings.__dataclass_fields__)
    lines = []
    for output in describe_stacks["Stacks"][0].get("Outputs", []):
        key = output["OutputKey"]
        if not key.startswith(PREFIX):
            continue
        name = setting_name(key)
        if name not in known:
            raise SystemExit(f"stack output {key} names no setting ({name!r} is not in platform_settings.py)")
        value = output["OutputValue"]
        if "\n" in value:
            raise SystemExit(f"stack output {key} spans lines")
        lines.append(f"GENOMICS_{name.upper()}={value}")
    return lines


if __name__ == "__main__":
    print("\n".join(env_lines(json.load(sys.stdin))))
