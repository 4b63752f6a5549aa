-- One row per ingested GEO sample: its series, fastp's figures, the QC verdict the reviewer saw and its
-- library layout (paired-end or single-end).
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  series_id,
  reads_before,
  reads_after,
  q30_rate,
  gc_content,
  duplication_rate,
  verdict,
  reason,
  layout,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
