"""Squeeze service: the HTTP API (FastAPI) and the store it shares with the workers.

Importing `app` or its table modules imports neither FastAPI nor PyTorch: workers use the tables."""
