"""Catalog retrieval: product schema, embeddings, Qdrant store, grounded facts for the prompt."""
