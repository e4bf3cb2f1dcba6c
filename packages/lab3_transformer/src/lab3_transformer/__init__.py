"""Lab 3: attention from scratch and a tiny transformer you can watch think."""
