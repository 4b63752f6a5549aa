-- Staged ingestion QC: <staging>/sample_id=<GSM>/fastp.tsv written by the qc step, one line per sample.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  series_id string,
  reads_before bigint,
  reads_after bigint,
  q30_rate double,
  gc_content double,
  duplication_rate double,
  verdict string,
  reason string,
  layout string
{% endblock %}
