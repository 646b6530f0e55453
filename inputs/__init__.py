"""The images a run reads: datasets, the search's split, augmentation, loaders, and NAS-Bench-201's files."""
