"""Adaptation jobs: a queue persisted in SQLite, one worker process at a time, resume after restart.

The queue:
- `states`:   the one list of job states.
- `records`:  job rows, events and artifacts in the database (all SQL on `jobs`).
- `retention`: deleting finished jobs and their files.
The request contract:
- `schemas`:  the bodies of /v1/jobs; `validate`: a request checked against the registries and the dataset.
The processes:
- `manager`:  the daemon's thread that runs queued jobs in child processes and recovers lost ones.
- `worker`:   the child process (`python -m edged.jobs.worker`), handed the daemon's Settings (`worker_env`).
- `execute`:  the worker's job: `edged.pipeline` wired to the store; `progress`: its events, cancel and stop checks.
The events:
- `sse`:      a job's events as Server-Sent Events.
"""
