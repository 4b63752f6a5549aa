-- One row per sample and step of a pipeline run: succeeded, failed (the tool's or the job's error), excluded (a
-- QC gate) or not_run (an earlier step failed or excluded the sample). "What happened to sample X" is one query.
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  run_id,
  step,
  outcome,
  reason,
  job_id,
  attempts,
  exit_code,
  status_reason,
  container_reason,
  memory_mib,
  log,
  log_tail,
  from_unixtime(recorded_ms / 1000.0) AS recorded_at,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
