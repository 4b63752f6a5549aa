-- Gene abundance per sample: the sum over the gene's transcripts (TPM and estimated read counts add up).
SELECT
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  gene_id,
  count(*) AS transcripts,
  sum(tpm) AS tpm,
  sum(num_reads) AS num_reads,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
GROUP BY gene_id, {{ unit_column }}
