-- Point a published name at the current run tables in one statement: readers see the old set or the new
-- one, never half a publish. Each run table lists the units (samples) it no longer shows: for <table>, those
-- published again later at any version; for <table>_versions, those published again at the same version.
-- A run table written before a column was added to the table lists its columns, with NULL for the new ones.
CREATE OR REPLACE VIEW {{ database }}.{{ table }} AS
{% for part in parts %}
{% if not loop.first %}
UNION ALL
{% endif %}
{% if part.columns %}
SELECT {% for column in part.columns %}{% if column.present %}{{ column.name }}{% else %}CAST(NULL AS varchar) AS {{ column.name }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}
{% else %}
SELECT *
{% endif %}
  FROM {{ database }}.{{ part.run_table }}
{% if part.hidden %}
WHERE {{ unit_column }} NOT IN ({% for unit in part.hidden %}{{ unit }}{% if not loop.last %}, {% endif %}{% endfor %})
{% endif %}
{% endfor %}
