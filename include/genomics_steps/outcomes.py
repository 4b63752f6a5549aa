"""What happened to a sample at a step: the vocabulary the steps, the operator and the sample_outcomes table
share.

- ``succeeded``: the step's job ended well for the sample; it goes on to the next step.
- ``failed``: the tool or the job failed (its reason, exit code and log end are recorded).
- ``excluded``: a QC gate of the step said no (too few reads, say). The step's job ends with
  EXCLUDED_EXIT_CODE after printing ``excluded: <reason>`` as its last log line; Batch's retry rules do not
  retry it, and the sample goes no further. An excluded sample does not fail the run.
- ``not_run``: an earlier step failed or excluded the sample.
"""

from __future__ import annotations

SUCCEEDED, FAILED, EXCLUDED, NOT_RUN = "succeeded", "failed", "excluded", "not_run"
OUTCOMES = (SUCCEEDED, FAILED, EXCLUDED, NOT_RUN)

# Outside the tools' usual codes (1, 2, 255) and the sysexits range (64-78) the steps already use.
EXCLUDED_EXIT_CODE = 79
EXCLUDED_LINE = "excluded: "  # starts the last log line of an excluded sample's job; the reason follows


def excluded_reason(last_log_line: str) -> str | None:
    """The reason an excluded job gave on its last log line, or None if that line is not one."""
    line = last_log_line.strip()
    return line[len(EXCLUDED_LINE):].strip() if line.startswith(EXCLUDED_LINE) else None
