"""Rule gene_set_library: match every GMT of the run to the data's genes once."""

import json

import anndata as ad

from mscflow import job
from mscflow.genesets import GeneSetSettings, library_stage
from mscflow.io import write_table_atomic, write_text_atomic

smk = snakemake  # noqa: F821
log = job.start(smk)
var_names = ad.read_h5ad(smk.input.h5ad, backed="r").var_names
library = library_stage(var_names, GeneSetSettings.from_config(smk.params.genesets),
                        species=smk.params.species, sets=json.loads(smk.params.sets))
log.info("%d programme sets, %d marker sets on %d genes", len(library.programmes),
         len(library.markers), len(var_names))
write_table_atomic(library.report, smk.output.report)
write_text_atomic(library.to_json(), smk.output.library)
