-- Staged variant_calls: <staging>/<unit>=<id>/*.tsv, bcftools calls, one line per allele.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  chrom string,
  pos bigint,
  ref string,
  alt string,
  qual double,
  filter string,
  genotype string,
  depth bigint
{% endblock %}
