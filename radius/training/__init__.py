"""Floor 3: training. Trainers (Multi-VAE joint steps, RecVAE alternating phases),
losses, DDP, checkpoints and the content-keyed model cache, metrics."""
