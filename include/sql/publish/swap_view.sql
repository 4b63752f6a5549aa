-- Point the published name at the current run tables in one statement: readers see the old set or the new
-- one, never half a publish. A unit (sample) published again by a later run is hidden in the older run table.
CREATE OR REPLACE VIEW {{ database }}.{{ table }} AS
{% for part in parts %}
{% if not loop.first %}
UNION ALL
{% endif %}
SELECT * FROM {{ database }}.{{ part.run_table }}
{% if part.hidden %}
WHERE {{ unit_column }} NOT IN ({% for unit in part.hidden %}{{ unit }}{% if not loop.last %}, {% endif %}{% endfor %})
{% endif %}
{% endfor %}
