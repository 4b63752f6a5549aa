-- Staged QC metrics: <staging>/<unit>=<id>/*.tsv written by the steps, one metric per line. An empty value is
-- NULL: a metric undefined for the sample (bcftools' ts_tv when it has no transversions), never a 0.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  tool string,
  metric string,
  value double
{% endblock %}
