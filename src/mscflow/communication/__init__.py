"""Cell-cell communication per sample (LIANA+) and its shift between conditions."""
