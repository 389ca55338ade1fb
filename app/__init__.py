"""The HTTP API (FastAPI). Built by the service issue on top of `workers.compression`."""
