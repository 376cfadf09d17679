"""GPU ops of the NeRF renderer with their pure-PyTorch references."""
