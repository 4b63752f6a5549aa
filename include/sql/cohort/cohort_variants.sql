-- Sites of a project's joint-called germline cohort (one row per biallelic record of cohort.vcf.gz), with the
-- allele count, number and frequency over every sample of the cohort; the unit is the cohort's pipeline version.
SELECT
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  chrom,
  pos,
  ref,
  alt,
  CASE WHEN length(ref) = 1 AND length(alt) = 1 THEN 'SNV' ELSE 'INDEL' END AS variant_type,
  ac,
  an,
  af,
  qual,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
