-- The bill's figure for one pipeline run, from an AWS Data Exports CUR 2.0 table exported with split cost
-- allocation data (INCLUDE_RESOURCES and INCLUDE_SPLIT_COST_ALLOCATION_DATA) and the job tags project,
-- airflow_dag, run_id, step and sample activated as cost allocation tags (CUR 2.0 names them user_<tag> in
-- resource_tags). Each Batch job runs as an ECS task that carries its job's tags (propagateTags); CUR splits
-- the amortized cost of each EC2 instance across the tasks on it by reserved vCPU and memory
-- (split_line_item_split_cost) and reports the idle part of the instance apart (split_line_item_unused_cost).
-- The run's FSx file systems carry the same project/airflow_dag/run_id tags and appear as step 'fsx'.
-- sample_id is NULL for array jobs: their children share the array's tags, so CUR has one figure per array.
-- Parameters: project, airflow_dag (the pipeline's DAG id), run_id tag (batch_model.tag_value of the run id).
SELECT
  CASE WHEN line_item_product_code = 'AmazonFSx' THEN 'fsx' ELSE element_at(resource_tags, 'user_step') END AS step,
  element_at(resource_tags, 'user_sample') AS sample_id,
  count(DISTINCT line_item_resource_id) AS resources,
  sum(coalesce(split_line_item_split_cost, line_item_unblended_cost)) AS actual_usd,
  sum(coalesce(split_line_item_unused_cost, 0)) AS unused_usd,
  sum(split_line_item_public_on_demand_split_cost) AS public_on_demand_usd
FROM {{ database }}.{{ cur_table }}
WHERE element_at(resource_tags, 'user_project') = ?
  AND element_at(resource_tags, 'user_airflow_dag') = ?
  AND element_at(resource_tags, 'user_run_id') = ?
  AND line_item_line_item_type = 'Usage'
  AND (split_line_item_parent_resource_id IS NOT NULL OR line_item_product_code = 'AmazonFSx')
GROUP BY 1, 2
ORDER BY 1, 2
