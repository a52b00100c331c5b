"""The learning parts: network architecture, MNIST data, training, device choice."""
