-- Transcript abundance per sample, as salmon estimated it.
SELECT
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  transcript_id,
  gene_id,
  length,
  effective_length,
  tpm,
  num_reads,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
