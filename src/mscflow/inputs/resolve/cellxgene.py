"""CELLxGENE Discover datasets: one h5ad per dataset, located through the curation API.

``https://api.cellxgene.cziscience.com/curation/v1/collections/<collection>`` lists the
collection's ``datasets``, each with ``dataset_id``, ``title``, ``cell_count``, ontology
lists (``organism``, ``tissue``, ``disease`` ... as ``[{label: ...}]``) and ``assets``
(``filetype`` H5AD, ``url``, ``filesize``). The asset URL names the dataset *version*, so
it is taken from the API (never built) and pinned in the preset's lock with its sha256
(CELLxGENE publishes none). Each dataset is one record sample; ``select`` picks datasets
by any field (``dataset_id``, ``title`` ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mscflow.inputs.resolve.base import PresetError, RecordCache, RecordFile, RecordSample

CURATION_API = "https://api.cellxgene.cziscience.com/curation/v1/collections"


def _flat(value: Any) -> str | None:
    """A dataset attribute as text: scalars as they are, ontology lists as labels."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        labels = [str(v.get("label", "")) for v in value if v.get("label")]
        return ",".join(labels) if labels else None
    return None


def cellxgene_records(source: Mapping[str, Any], cache: RecordCache) -> list[RecordSample]:
    """The datasets of a CELLxGENE collection, each with its H5AD asset."""
    collection = source["collection"]
    url = f"{CURATION_API}/{collection}"
    try:
        datasets = json.loads(cache.text(url, "collection.json"))["datasets"]
    except (ValueError, KeyError, TypeError) as err:
        raise PresetError(f"{cache.label}: {url} is not a collection JSON with datasets "
                          f"({err}); check the collection id.") from err
    samples = []
    for ds in datasets:
        fields = {k: v for k, v in ((k, _flat(v)) for k, v in ds.items()) if v is not None}
        assets = [a for a in ds.get("assets", []) if str(a.get("filetype")).upper() == "H5AD"]
        files = [RecordFile(a["url"].rsplit("/", 1)[-1], a["url"], size=a.get("filesize"))
                 for a in assets if a.get("url")]
        samples.append(RecordSample(str(ds.get("dataset_id", "")), fields, files))
    return samples
