-- regenie association results per phenotype, with the p-value next to its -log10.
SELECT
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  chrom,
  pos,
  variant_id,
  allele0,
  allele1,
  a1freq,
  n,
  beta,
  se,
  log10p,
  power(10, -log10p) AS pvalue,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
