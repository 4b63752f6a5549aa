-- One row per Batch job: what ran for which sample, for how long, on what. vcpu_hours and gib_hours are the
-- inputs of cost per sample (multiply by the instance family's price per vCPU-hour and GiB-hour).
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  job_id,
  step,
  status,
  attempts,
  from_unixtime(started_ms / 1000.0) AS started_at,
  from_unixtime(stopped_ms / 1000.0) AS stopped_at,
  (stopped_ms - started_ms) / 1000.0 AS runtime_seconds,
  vcpus,
  memory_mib,
  vcpus * (stopped_ms - started_ms) / 3600000.0 AS vcpu_hours,
  memory_mib / 1024.0 * (stopped_ms - started_ms) / 3600000.0 AS gib_hours,
  job_queue,
  capacity_type,
  instance_type,
  container_reason,
  job_definition,
  reused_from,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
