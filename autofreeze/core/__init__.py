"""Plain torch, never optuna: backbones cut into blocks, freezing, split forward, the trainer,
weights and devices.
"""
