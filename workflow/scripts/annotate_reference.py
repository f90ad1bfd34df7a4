"""Rule annotate_reference: celltypist predictions of every cell, majority voting over the
run's clusters."""

import anndata as ad

from mscflow import job
from mscflow.annotate.reference import load_model, predict_reference
from mscflow.io import write_table_atomic

smk = snakemake  # noqa: F821
log = job.start(smk)
adata = ad.read_h5ad(smk.input.h5ad)
predictions = predict_reference(adata, load_model(smk.input.model),
                                adata.obs[smk.params.cluster_key],
                                majority_voting=smk.params.majority_voting)
for label, n in predictions["cell_type_reference"].value_counts().items():
    log.info("reference label %s: %d cells", label, n)
write_table_atomic(predictions, smk.output[0], index=True)
