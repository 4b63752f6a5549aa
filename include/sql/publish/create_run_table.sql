-- Write the first batch (at most 100 partitions) of one publish into a fresh, run-scoped location.
-- Athena writes at most 100 partitions per statement; insert_run_partitions.sql adds the other batches.
-- The batch's unit values (sample ids, phenotypes) are execution parameters, one ? each.
CREATE TABLE {{ database }}.{{ run_table }}
WITH (
  format = 'PARQUET',
  write_compression = 'SNAPPY',
  external_location = {{ location }},
  partitioned_by = ARRAY['project', '{{ unit_column }}']
)
AS
SELECT * FROM (
{% include select %}
) AS published
WHERE {{ unit_column }} IN ({% for _ in batch %}?{% if not loop.last %}, {% endif %}{% endfor %})
