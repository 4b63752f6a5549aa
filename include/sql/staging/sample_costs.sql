-- Staged sample_costs: <staging>/<unit>=<id>/costs.tsv, one line per step of a unit (a sample, or a GWAS trait),
-- staged by the run's costs task (run_costs.py) from its jobs' attempts, instances and prices.
{% extends "staging/_external_table.sql" %}
{% block columns %}
  run_id string,
  step string,
  attempts bigint,
  instance_type string,
  purchase_option string,
  vcpu_hours double,
  gib_hours double,
  cost_usd double,
  lost_to_reclaim_usd double,
  priced boolean
{% endblock %}
