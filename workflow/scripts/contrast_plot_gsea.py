"""Rule contrast_plot_gsea: running enrichment of the efferocytosis and IL-10 sets."""

import anndata as ad
import pandas as pd

from mscflow.contrast import gsea_sets_for_plot, load_programme_sets, parse_settings
from mscflow.plotting_contrast import gsea_enrichment_plot, save_figure
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = parse_settings(smk.params.settings)
var_names = ad.read_h5ad(smk.input.h5ad, backed="r").var_names
sets = load_programme_sets(
    smk.input.gmts, smk.params.gmt_species, smk.params.data_species, var_names,
    min_genes=smk.params.min_genes, synonyms=smk.input.synonyms, orthologs=smk.input.orthologs,
)
gsea = pd.read_parquet(smk.input.gsea)
names = gsea_sets_for_plot(gsea, settings.gsea.plot_sets)
log.info("plotting %s for %s", names, smk.wildcards.contrast)
fig = gsea_enrichment_plot(pd.read_parquet(smk.input.de), gsea, sets, smk.wildcards.contrast,
                           names, settings.gsea.weight)
save_figure(fig, smk.output.png)
