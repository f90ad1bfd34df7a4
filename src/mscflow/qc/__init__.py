"""Quality control per sample: cell metrics, thresholds, doublets."""
