"""Adaptation jobs: a queue persisted in SQLite, one worker process at a time, resume after restart.

- `records`:  job rows, events and artifacts in the database (the only SQL of this package).
- `validate`: a job request checked against the method and model registries and the dataset.
- `manager`:  the daemon's thread that runs queued jobs in child processes and recovers lost ones.
- `worker`:   the child process (`python -m edged.jobs.worker`), running `pipeline` on one job.
- `progress`: the worker's progress callback: throttled events, cancel and stop checks.
- `sse`:      a job's events as Server-Sent Events.
"""
