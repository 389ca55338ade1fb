"""Celery workers and the compression engine they run."""
