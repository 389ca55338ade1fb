"""The engine's torch-free contract, shared by the API, the worker and the engine: accepted formats and
how uploads are sniffed, the recipe (typed steps and their checks), load options, measurement settings
and results, the job report, the parent/child protocol and the error types. Imports pydantic and the
standard library only (enforced by import-linter, see pyproject.toml)."""
