"""Rule score_programmes: match the gene sets to the data and score every cell."""

import anndata as ad
import pandas as pd

from mscflow.genesets import load_gene_sets, match_gene_sets, read_orthologs, read_synonyms
from mscflow.io import write_table_atomic
from mscflow.scoring import score_gene_sets
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
adata = ad.read_h5ad(smk.input.h5ad)
orthologs = read_orthologs(smk.input.orthologs)
synonyms = read_synonyms(smk.input.synonyms)
wanted = set(smk.params.scoring.get("sets") or [])
matched, reports = {}, []
for gmt, species in zip(smk.input.gmts, smk.params.gmt_species, strict=True):
    sets = load_gene_sets([gmt])
    if wanted:
        sets = {k: v for k, v in sets.items() if k in wanted}
    clash = sorted(set(sets) & set(matched))
    if clash:
        raise ValueError(f"gene-set names {clash} in '{gmt}' repeat names of an earlier GMT; "
                         "rename them so every set name is unique")
    found, rep = match_gene_sets(sets, adata.var_names, set_species=species,
                                 data_species=smk.params.data_species,
                                 min_genes=smk.params.min_genes, orthologs=orthologs,
                                 synonyms=synonyms)
    rep.insert(0, "gmt", gmt)
    matched.update(found)
    reports.append(rep)
report = pd.concat(reports, ignore_index=True)
write_table_atomic(report, smk.output.report)
scoring = smk.params.scoring
scores = score_gene_sets(adata, matched, method=scoring["method"],
                         random_state=smk.params.seed, n_bins=scoring.get("n_bins", 25),
                         ctrl_size=scoring.get("ctrl_size", 50), n_threads=smk.threads)
log.info("scored %d sets on %d cells with method %s", scores.shape[1], scores.shape[0],
         scoring["method"])
scores.index.name = "cell"
write_table_atomic(scores, smk.output.scores, index=True)
write_table_atomic(scores, smk.output.table, index=True)
