-- Staged sample_outcomes: <staging>/<unit>=<id>/<step>-<outcome>-<job>.tsv, one line per sample and step of a
-- run, staged by job_facts.py when the step's job ends (and by the run's outcomes task for steps not run).
{% extends "staging/_external_table.sql" %}
{% block columns %}
  run_id string,
  step string,
  outcome string,
  reason string,
  job_id string,
  attempts bigint,
  exit_code bigint,
  status_reason string,
  container_reason string,
  memory_mib bigint,
  log string,
  log_tail string,
  recorded_ms bigint
{% endblock %}
