"""Image embeddings for retrieval: metric-learning losses, P x K sampling, retrieval metrics."""
