-- Variant calls per sample; indels and SNVs told apart so recall can be queried per class.
SELECT
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  chrom,
  pos,
  ref,
  alt,
  CASE WHEN length(ref) = 1 AND length(alt) = 1 THEN 'SNV' ELSE 'INDEL' END AS variant_type,
  qual,
  filter,
  genotype,
  depth,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
