-- One row per unit (sample, or GWAS trait) and step of a pipeline run: what it cost, estimated as the instance's
-- hourly price x the larger of the job's vCPU and memory shares of it x run time, every attempt counted (a Spot
-- reclaim's lost attempts also apart); jobs of the whole run (an index build, GWAS step 1) and the run's FSx file
-- system split evenly across its units. priced = false: an attempt's instance or price was unknown and is left
-- out of cost_usd. The method is in plugins/costs.py; include/sql/costs/ reconciles it with the bill (CUR 2.0).
SELECT
  {{ pipeline }} AS pipeline,
  {{ pipeline_version }} AS pipeline_version,
  {{ run_key }} AS run_key,
  run_id,
  step,
  attempts,
  instance_type,
  purchase_option,
  vcpu_hours,
  gib_hours,
  cost_usd,
  lost_to_reclaim_usd,
  priced,
  {{ project }} AS project,
  {{ unit_column }}
FROM {{ database }}.{{ staging_table }}
