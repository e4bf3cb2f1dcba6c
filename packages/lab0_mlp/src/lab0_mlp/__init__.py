"""Lab 0: tensors, autograd and an MLP from scratch, each piece checked against PyTorch's own."""
