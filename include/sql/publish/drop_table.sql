-- Forget a run table or a staging table (its files are deleted by the publish step, not by Athena).
DROP TABLE IF EXISTS {{ database }}.{{ name }}
