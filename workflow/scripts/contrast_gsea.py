"""Rule contrast_gsea: gseapy prerank of the pseudobulk Wald statistics (local GMT only)."""

import anndata as ad
import pandas as pd

from mscflow.contrast import gsea_prerank, load_programme_sets, parse_settings, write_table
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = parse_settings(smk.params.settings)
var_names = ad.read_h5ad(smk.input.h5ad, backed="r").var_names
sets = load_programme_sets(
    smk.input.gmts, smk.params.gmt_species, smk.params.data_species, var_names,
    min_genes=smk.params.min_genes, synonyms=smk.input.synonyms, orthologs=smk.input.orthologs,
)
log.info("GSEA library: %d sets", len(sets))
de = pd.read_parquet(smk.input.de)
table = gsea_prerank(de, sets, settings, threads=smk.threads)
log.info("GSEA: %d tested, %d significant at FDR %s", int((table["status"] == "tested").sum()),
         int(table["significant"].sum()), settings.fdr)
write_table(table, smk.output.tsv, smk.output.parquet)
