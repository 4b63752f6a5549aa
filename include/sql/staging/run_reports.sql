-- Staged run_reports: <staging>/<unit>=<run label>/report.tsv, one line written by the run's multiqc job.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  run_id string,
  uri string,
  samples bigint,
  failed bigint,
  excluded bigint,
  failed_samples string,
  excluded_samples string
{% endblock %}
