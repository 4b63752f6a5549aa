-- Add one more batch (at most 100 partitions) of a publish to its run table.
INSERT INTO {{ database }}.{{ run_table }}
SELECT * FROM (
{% include select %}
) AS published
WHERE {{ unit_column }} IN ({% for _ in batch %}?{% if not loop.last %}, {% endif %}{% endfor %})
