"""Rule contrast_pseudobulk_de: pydeseq2 per contrast x cell type on summed raw counts."""

import anndata as ad

from mscflow.contrast import parse_contrasts, parse_settings, pseudobulk_de, write_table
from mscflow.workflow import read_sample_sheet, setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
samples = read_sample_sheet(smk.input.samples)
contrasts = parse_contrasts(smk.params.contrasts, samples)
settings = parse_settings(smk.params.settings)
adata = ad.read_h5ad(smk.input.h5ad)
table = pseudobulk_de(adata, contrasts, settings, samples, n_cpus=smk.threads)
units = table.drop_duplicates(["contrast", "cell_type"])
for (name, status), n in units.groupby(["contrast", "status"]).size().items():
    log.info("%s: %d cell types %s", name, n, status)
log.info("%d gene x cell type calls at FDR %s", int(table["significant"].sum()), settings.fdr)
write_table(table, smk.output.tsv, smk.output.parquet)
