-- Staged transcript_quant: <staging>/<unit>=<id>/*.tsv, salmon quant.sf rows, with the gene each transcript belongs to.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  transcript_id string,
  gene_id string,
  length bigint,
  effective_length double,
  tpm double,
  num_reads double
{% endblock %}
