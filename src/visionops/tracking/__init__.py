"""Everything Weights & Biases: runs, logged samples and the bundle as a model artifact."""
