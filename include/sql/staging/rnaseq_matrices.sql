-- Staged rnaseq_matrices: <staging>/<unit>=<version>/matrices.tsv, written by the rnaseq merge job from the
-- matrices' manifest (the unit is the pipeline version).
{% extends "staging/_external_table.sql" %}
{% block columns %}
  kind string,
  format string,
  uri string,
  n_samples bigint,
  samples string,
  inputs string,
  built_at string
{% endblock %}
