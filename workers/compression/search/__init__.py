"""`auto`: a budgeted search over compression pipelines (space.py: what is tried; searcher.py: how the
budget is spent; objective.py: what "better" means)."""
