-- One row per pipeline run: where its MultiQC report is, how many samples it names, and which failed or were
-- excluded (comma-separated; their reasons are in sample_outcomes).
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  run_id,
  uri,
  samples,
  failed,
  excluded,
  failed_samples,
  excluded_samples,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
