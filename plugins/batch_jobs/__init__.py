"""Running one pipeline step as an AWS Batch job, in the parts BatchJobOperator puts together:

- ``request``: the checks of what a job may be and the SubmitJob request built from it (environment, tags,
  resources, the array manifest);
- ``submission``: the submission record, reattach-or-submit and deterministic job names, so an Airflow
  retry finds the job an earlier try submitted instead of submitting a duplicate;
- ``completion``: what a finished job tells the task: its summary, every array child's sample and state, and
  for a failure the message with the end of the failed jobs' logs.

Waiting (events, reconciliation) is ``triggers/batch_events.py``; the Batch vocabulary is ``batch_model.py``.
"""
