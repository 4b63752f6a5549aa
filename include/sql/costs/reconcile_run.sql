-- Estimate against bill, per step, for one pipeline run: sample_costs (our estimate, published with the run)
-- beside the CUR 2.0 split cost allocation figures of the same run (see cur_run_cost.sql for the export and
-- tags it needs). Expect actual_usd to differ: CUR uses the amortized price actually paid (Savings Plans,
-- reservations, the Spot price of each hour) and adds what the estimate leaves out (EBS volumes, the instance's
-- unused capacity shown as unused_usd). A large difference in one step points at a wrong share or price.
-- Parameters: project, run_id (for sample_costs), then project, airflow_dag, run_id tag (for CUR).
WITH estimated AS (
  SELECT step, sum(cost_usd) AS estimated_usd, sum(lost_to_reclaim_usd) AS lost_to_reclaim_usd,
         bool_and(priced) AS all_priced
  FROM {{ database }}.sample_costs
  WHERE project = ? AND run_id = ?
  GROUP BY step
),
actual AS (
  SELECT
    CASE WHEN line_item_product_code = 'AmazonFSx' THEN 'fsx' ELSE element_at(resource_tags, 'user_step') END AS step,
    sum(coalesce(split_line_item_split_cost, line_item_unblended_cost)) AS actual_usd,
    sum(coalesce(split_line_item_unused_cost, 0)) AS unused_usd
  FROM {{ database }}.{{ cur_table }}
  WHERE element_at(resource_tags, 'user_project') = ?
    AND element_at(resource_tags, 'user_airflow_dag') = ?
    AND element_at(resource_tags, 'user_run_id') = ?
    AND line_item_line_item_type = 'Usage'
    AND (split_line_item_parent_resource_id IS NOT NULL OR line_item_product_code = 'AmazonFSx')
  GROUP BY 1
)
SELECT
  coalesce(e.step, a.step) AS step,
  e.estimated_usd,
  e.lost_to_reclaim_usd,
  e.all_priced,
  a.actual_usd,
  a.unused_usd,
  a.actual_usd - e.estimated_usd AS difference_usd
FROM estimated e
FULL OUTER JOIN actual a ON e.step = a.step
ORDER BY 1
