-- Staged QC metrics: <staging>/<unit>=<id>/*.tsv written by the steps, one metric per line.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  tool string,
  metric string,
  value double
{% endblock %}
