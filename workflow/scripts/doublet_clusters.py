"""Rule doublet_clusters: flag clusters the called doublets land in (doublet-driven)."""

import pandas as pd

from mscflow import job
from mscflow.io import write_table_atomic
from mscflow.plotting import save
from mscflow.qc.doublet_clusters import doublet_cluster_figure, doublet_cluster_table

smk = snakemake  # noqa: F821
log = job.start(smk)
metrics = pd.concat([pd.read_csv(p, sep="\t", usecols=["cell", "predicted_doublet",
                                                       "doublet_neighbour", "doublet_score"])
                     for p in smk.input.metrics], ignore_index=True)
table = doublet_cluster_table(pd.read_csv(smk.input.cells, sep="\t"),
                              pd.read_csv(smk.input.clusters, sep="\t"), metrics,
                              smk.params.max_share)
write_table_atomic(table, smk.output.table)
save(doublet_cluster_figure(table, smk.params.max_share), smk.output.figure)
log.info("%d of %d clusters doublet-driven", int(table["doublet_driven"].sum()), len(table))
