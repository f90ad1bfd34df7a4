"""Rule train_reference_model: a celltypist model from the labelled reference h5ad."""

import os

from mscflow import job
from mscflow.annotate.reference import read_reference, train_reference_model

smk = snakemake  # noqa: F821
log = job.start(smk)
reference = read_reference(smk.input[0])
log.info("reference %s: %d cells x %d genes", smk.input[0], reference.n_obs, reference.n_vars)
model = train_reference_model(reference, smk.params.label_column, seed=smk.params.seed,
                              top_genes=smk.params.top_genes,
                              what=f"annotation.reference_h5ad {smk.input[0]}")
# celltypist writes in place (and ends the name in .pkl): rename when complete
partial = smk.output[0].removesuffix(".pkl") + ".partial.pkl"
model.write(partial)
os.replace(partial, smk.output[0])
log.info("model: %d genes, labels %s", len(model.features), ", ".join(model.cell_types))
