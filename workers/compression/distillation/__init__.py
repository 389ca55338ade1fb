"""The machinery behind `distill`: losses, students, the training loop with checkpoints. The verb is
methods/distill.py."""
