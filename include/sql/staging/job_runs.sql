-- Staged job_runs: <staging>/<unit>=<id>/*.tsv, one line per Batch job, staged by job_facts.py when the job ends.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  job_id string,
  step string,
  status string,
  attempts bigint,
  started_ms bigint,
  stopped_ms bigint,
  vcpus double,
  memory_mib bigint,
  job_queue string,
  capacity_type string,
  instance_type string,
  container_reason string,
  job_definition string,
  reused_from string
{% endblock %}
