"""Code that runs inside Batch jobs (in the docker/ images on AWS, on the host with the local backend).

It must not import Airflow: a job image carries only this package and its tools.
"""
