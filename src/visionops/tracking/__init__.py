"""Everything Weights & Biases; nothing outside this package imports wandb.

- :mod:`~visionops.tracking.wandb_run`: a W&B run, or a tracker that does nothing;
- :mod:`~visionops.tracking.training`: what a training run logs (start, epochs, outcome);
- :mod:`~visionops.tracking.sweeps`: sweep files → W&B sweeps and agents;
- :mod:`~visionops.tracking.model_artifact`: an exported bundle as a W&B model artifact.

It imports only the core modules (artifacts, config, errors), so every stage may use it.
"""
