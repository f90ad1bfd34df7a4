"""Clustering: highly variable genes, PCA, batch integration and its metrics,
neighbours, Leiden, UMAP."""
