"""The store both processes stand on: settings, the SQL store (engine, tables, the job state machine),
the blob store, the broker (Celery app, queue and task names), logging, and the callback-URL policy.
The API and the worker import it; it imports neither (enforced by import-linter, see pyproject.toml)."""
