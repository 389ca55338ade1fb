"""Recipes for the common cases, by name (`squeeze jobs submit --preset int8`)."""

PRESETS = {
    "int8": {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
    "fp16": {"steps": [{"method": "quantize", "scheme": "fp16"}]},
    "prune50": {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.5, "finetune_epochs": 3}]},
    "distill-half": {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 10}]},
}
