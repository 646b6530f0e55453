"""A run's life: its settings, directory, checkpoints and weights files, devices and torchrun processes, log,
and how it stops."""
