"""The machinery behind `prune`: lifting .pt2 graphs into layers, masks, Torch-Pruning, sparse storage,
per-layer sensitivity. The verb is methods/prune.py."""
