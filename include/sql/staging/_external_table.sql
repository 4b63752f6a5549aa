-- The staging table of one publish: the tab-separated files the steps wrote under
-- <staging>/<unit>=<id>/, with a header line. Partition projection lists exactly this publish's units, so
-- the catalog needs no partition registration and a batch's WHERE reads only its own folders.
CREATE EXTERNAL TABLE IF NOT EXISTS {{ database }}.{{ staging_table }} (
{% block columns %}{% endblock %}
)
PARTITIONED BY ({{ unit_column }} string)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '\t'
LOCATION {{ location }}
TBLPROPERTIES (
  'skip.header.line.count' = '1',
  'projection.enabled' = 'true',
  'projection.{{ unit_column }}.type' = 'enum',
  'projection.{{ unit_column }}.values' = '{{ units }}'
)
