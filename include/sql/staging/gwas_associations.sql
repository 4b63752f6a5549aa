-- Staged gwas_associations: <staging>/<unit>=<id>/*.tsv, regenie step 2 results, one line per variant (the unit is the phenotype).
{% extends "staging/_external_table.sql" %}
{% block columns %}
  chrom string,
  pos bigint,
  variant_id string,
  allele0 string,
  allele1 string,
  a1freq double,
  n bigint,
  beta double,
  se double,
  log10p double
{% endblock %}
