"""checkpoint-project: a complete CIFAR-10 image-classification system."""
