"""Cell-type labels for clusters, and their agreement with published labels."""
