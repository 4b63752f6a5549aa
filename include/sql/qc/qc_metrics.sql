-- Per-sample QC metrics in long form (tool, metric, value), for every pipeline.
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  tool,
  metric,
  value,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
