-- Where a project's current gene x sample matrices are, per pipeline version: one row per kind (length-scaled
-- counts, TPM, gene lengths) and format (tsv, parquet), with the samples they hold and what they were built from.
SELECT
  {{ pipeline }} AS pipeline,
  {{ run_key }} AS run_key,
  kind,
  format,
  uri,
  n_samples,
  samples,
  inputs,
  CAST(built_at AS timestamp) AS built_at,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
