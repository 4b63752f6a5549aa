-- Staged cohort_variants: <staging>/cohort=<version>/sites.tsv, written by the cohort merge from bcftools query.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  chrom string,
  pos bigint,
  ref string,
  alt string,
  ac bigint,
  an bigint,
  af double,
  qual double
{% endblock %}
