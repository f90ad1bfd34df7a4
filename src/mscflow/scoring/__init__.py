"""Per-cell gene-set scores by a compiled sparse kernel."""
