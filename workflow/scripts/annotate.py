"""Rule annotate: label clusters with lung/liver populations from the marker sets, take
cell_type from annotation.source (markers, published or reference); assemble the final
AnnData."""

import anndata as ad
import pandas as pd

from mscflow import job
from mscflow.annotate.core import AnnotationSettings, GroupExpression, annotate_stage
from mscflow.annotate.plots import marker_set_dotplot
from mscflow.annotate.published import published_labels, read_name_table
from mscflow.annotate.reference import map_reference_labels
from mscflow.genesets import read_library
from mscflow.io import write_h5ad_with_obs, write_table_atomic
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
# obs and var names only: the per-sample jobs summed the expression the annotation needs
backed = ad.read_h5ad(smk.input.h5ad, backed="r")
adata = ad.AnnData(obs=backed.obs.copy(), var=pd.DataFrame(index=backed.var_names.copy()))
backed.file.close()
library = read_library(smk.input.library)
expression = GroupExpression.combine([GroupExpression.load(p) for p in smk.input.expression])
settings = AnnotationSettings.from_config(smk.params.annotation)
names = (read_name_table(smk.input.published_names)
         if "published_names" in smk.input.keys() else {})
published = (published_labels(adata.obs, settings.published_column, names)
             if settings.published_column else None)
reference = (map_reference_labels(pd.read_parquet(smk.input.reference), names)
             if settings.source == "reference" else None)
per_cell, per_cluster, dot = annotate_stage(
    adata, library.marker_sets(),
    pd.read_parquet(smk.input.marker_scores), pd.read_parquet(smk.input.scores),
    settings, cluster_key=smk.params.cluster_key,
    dropped_markers=library.dropped_sets("marker"), expression=expression,
    published=published, reference=reference,
)
for label, n in adata.obs["cell_type"].value_counts().items():
    log.info("%s: %d cells", label, n)
save(marker_set_dotplot(dot), smk.output.dotplot)
write_table_atomic(per_cell, smk.output.cells, index=True)
write_table_atomic(per_cluster, smk.output.clusters)
write_h5ad_with_obs(smk.input.h5ad, adata.obs, smk.output.h5ad,
                    compression=smk.params.compression)
