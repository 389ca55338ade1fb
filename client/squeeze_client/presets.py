"""Recipes for the common cases, by name (`squeeze jobs submit --preset int8`)."""

PRESETS = {
    "int8": {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
    "fp16": {"steps": [{"method": "quantize", "scheme": "fp16"}]},
    "prune50": {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.5, "finetune_epochs": 3}]},
    "distill-half": {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 10}]},
    # search everything under a 1-point accuracy budget for 15 minutes; the job returns the Pareto front
    "auto": {"steps": [{"method": "auto", "max_accuracy_drop": 0.01, "objective": "latency", "budget_minutes": 15}]},
}
