"""Benchmarks print figures; tests check behaviour. Shared by the scripts here."""


def run_json(*args, **kwargs) -> dict:
    """The engine's report as report.json has it (the scripts read and print that shape)."""
    from workers.compression import run_recipe

    return run_recipe(*args, **kwargs).model_dump(mode="json")
