"""Lab 1: convolution and pooling from scratch, output-shape reasoning, and a fast CNN."""
