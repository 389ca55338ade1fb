"""`auto`: a budgeted search over compression pipelines (space.py: what is tried; searcher.py: the plan, how
the budget is spent; budget.py: the clock and the cost estimates; evaluator.py: building and measuring one
candidate; reporter.py: the records, the front and the reports; objective.py: what "better" means)."""
