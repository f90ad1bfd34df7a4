"""The demo's expression model: its constants, :class:`DemoSpec` (every parameter) and
:class:`DemoModel`, used by :mod:`mscflow.demo.simulate` and :mod:`mscflow.demo.truth`.

Model (every effect size is a parameter of :class:`DemoSpec`, documented there):

* Genes: every gene of the curated programme and marker GMT files, 13 mitochondrial genes,
  ribosomal and haemoglobin genes, and background genes drawn from real mouse symbols
  (Tabula Muris lung channel).
* Expression: a shared baseline profile (gamma-distributed relative abundances); each cell
  type multiplies its marker genes by ``marker_fold`` and a private set of type genes by
  ``type_gene_fold``, with a small log-normal jitter on all genes. Macrophage populations
  share the pan-macrophage genes. Every gene with a planted condition effect in a cell type
  is expressed there at baseline (at least ``programme_baseline`` x the mean abundance of a
  non-ribosomal gene), as macrophages express efferocytosis and IL-10 genes in vivo.
* Counts: negative binomial (dispersion ``nb_dispersion``) around library size x profile;
  library sizes log-normal (median ``median_umi``, log sd ``library_log_sd``).
* Batches: every sample belongs to one of ``batches``; replicate r of the i-th tissue and
  the j-th condition goes to batch (r - 1 + i + j) mod n_batches, so every tissue and every
  condition holds every batch (3 replicates, 2 batches: 2:1 within a tissue x condition,
  3:3 per tissue and per condition). A share ``batch_gene_fraction`` of the genes without a
  planted effect is multiplied by per-batch log-normal factors (log sd ``batch_log_sd``)
  and library sizes by ``batch_library_factors``.
* Continuum (liver): classical monocytes and MoMF lie on one lineage with a position t in
  [0, 1]: monocytes t = 0.5 x Beta(``monocyte_position_beta``), MoMF t = 0.5 + 0.5 x
  Beta(``momf_position_beta`` of the condition); the profile is
  exp((1 - t) log p_monocyte + t log p_MoMF), and the IL-10 genes (``trajectory_il10_set``)
  rise log-linearly over the last third up to ``trajectory_il10_fold`` at t = 1.
* Low-quality cells (fraction ``low_quality_fraction``): library size x 0.04-0.15 and
  mitochondrial fraction 30-70 %.
* Doublets (fraction ``doublet_fraction``): of a kind drawn by ``doublet_kind_shares``
  (heterotypic_distinct, heterotypic_similar: a pair of :data:`SIMILAR_PAIRS`, homotypic),
  cell types drawn in proportion to the sample's composition; two full cells summed and
  binomially thinned to gain x their mean library, gain uniform in ``doublet_gain_range``.
* Condition effects in the non-reference conditions (folds multiply where they overlap):
  genes of ``effect_sets`` x ``programme_fold`` in macrophages (alveolar, interstitial,
  Kupffer, MoMF); liver: the MoMF proportion x ``momf_expansion``, Il10 x
  ``il10_ligand_fold`` in MoMF, Il10ra/Il10rb x ``il10_receptor_fold`` and the
  ``il10_response_set`` x ``il10_response_fold`` in NK cells and neutrophils; lung:
  Mertk/Axl/Cd36 x ``ps_receptor_fold`` in alveolar macrophages and Gas6/Pros1 x
  ``bridging_fold`` in ``bridging_sender`` (endothelial cells).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
from scipy import stats

LUNG, LIVER = "lung", "liver"
MACROPHAGES = ("alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf")


MITO_GENES = (
    "mt-Nd1", "mt-Nd2", "mt-Co1", "mt-Co2", "mt-Atp8", "mt-Atp6", "mt-Co3",
    "mt-Nd3", "mt-Nd4l", "mt-Nd4", "mt-Nd5", "mt-Nd6", "mt-Cytb",
)  # fmt: skip


TISSUE_COMPOSITION: dict[str, dict[str, float]] = {
    LUNG: {
        "alveolar_macrophage": 0.18, "interstitial_macrophage": 0.06, "momf": 0.05,
        "classical_monocyte": 0.08, "neutrophil": 0.10, "nk_cell": 0.06, "t_cell": 0.12,
        "b_cell": 0.10, "endothelial": 0.15, "at2": 0.10,
    },
    LIVER: {
        "kupffer_cell": 0.16, "momf": 0.06, "classical_monocyte": 0.07, "neutrophil": 0.06,
        "nk_cell": 0.08, "t_cell": 0.12, "b_cell": 0.07, "endothelial": 0.18,
        "hepatocyte": 0.20,
    },
}  # fmt: skip


# Relative library size per cell type (neutrophils are RNA-poor, hepatocytes rich).
LIBRARY_SCALE = {"neutrophil": 0.55, "hepatocyte": 1.6, "t_cell": 0.8, "b_cell": 0.8}


# Typical mitochondrial fraction of healthy cells per type.
MITO_MEAN = {"hepatocyte": 0.09, "at2": 0.06}


# Cell types close enough that their doublets look like a cell of either (heterotypic_similar).
SIMILAR_PAIRS = (
    ("alveolar_macrophage", "interstitial_macrophage"),
    ("interstitial_macrophage", "momf"),
    ("kupffer_cell", "momf"),
    ("classical_monocyte", "momf"),
    ("t_cell", "nk_cell"),
)


DOUBLET_KINDS = ("heterotypic_distinct", "heterotypic_similar", "homotypic")


# The monocyte -> MoMF continuum (in the liver).
LINEAGE = ("classical_monocyte", "momf")


IL10_RECEIVERS = ("nk_cell", "neutrophil")


IL10_RECEPTOR = ("Il10ra", "Il10rb")


PS_RECEPTORS = ("Mertk", "Axl", "Cd36")


BRIDGING_LIGANDS = ("Gas6", "Pros1")


TAM_RECEPTORS = ("Mertk", "Axl", "Tyro3")


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the demo; every planted effect size lives here.

    Design: ``seed`` (of the one random generator), ``cells_per_sample``, ``replicates`` per
    tissue and condition, ``tissues`` (keys of TISSUE_COMPOSITION), ``conditions`` (the first
    is the reference), ``formats`` (input format per tissue_condition).
    Expression: ``n_background_genes``, ``median_umi``, ``library_log_sd``,
    ``nb_dispersion``, ``marker_fold`` (marker genes of a cell type), ``type_gene_fold`` on
    ``n_type_genes`` private genes per type, ``programme_baseline`` (floor of a planted gene
    where it is planted, x the mean non-ribosomal abundance).
    Batches: ``batches`` (names), ``batch_gene_fraction`` (share of the genes without a
    planted effect that batches shift), ``batch_log_sd`` (log sd of a batch's per-gene
    factors), ``batch_library_factors`` (library-size factor per batch).
    Quality: ``low_quality_fraction``; ``doublet_fraction`` (all kinds together),
    ``doublet_kind_shares`` (share of each kind of DOUBLET_KINDS), ``doublet_gain_range``
    (a doublet's library over its parents' mean, drawn uniformly).
    MSC effects: ``programme_fold`` on the genes of ``effect_sets`` in macrophages,
    ``momf_expansion`` (liver MoMF proportion), ``il10_ligand_fold`` (Il10 in liver MoMF,
    on top of the programme fold), ``il10_receptor_fold`` (Il10ra, Il10rb) and
    ``il10_response_fold`` (genes of ``il10_response_set``) in liver NK cells and
    neutrophils, ``ps_receptor_fold`` (Mertk, Axl, Cd36 in lung alveolar macrophages, on top
    of the programme fold), ``bridging_fold`` (Gas6, Pros1 in the lung's
    ``bridging_sender``).
    Continuum (liver monocytes -> MoMF): ``monocyte_position_beta`` (Beta shape of a
    monocyte's position, scaled to [0, 0.5)), ``momf_position_beta`` (one Beta shape per
    condition, scaled to [0.5, 1]), ``trajectory_il10_set`` and ``trajectory_il10_fold``
    (fold of those genes at t = 1, rising from t = 2/3).
    """

    seed: int = 0
    cells_per_sample: int = 1200
    replicates: int = 3
    tissues: tuple[str, ...] = (LUNG, LIVER)
    conditions: tuple[str, ...] = ("control", "MSC")
    n_background_genes: int = 3000
    median_umi: float = 4000.0
    library_log_sd: float = 0.35
    nb_dispersion: float = 0.15
    marker_fold: float = 12.0
    type_gene_fold: float = 4.0
    n_type_genes: int = 40
    programme_baseline: float = 2.0
    batches: tuple[str, ...] = ("b1", "b2")
    batch_gene_fraction: float = 0.2
    batch_log_sd: float = 0.5
    batch_library_factors: tuple[float, ...] = (1.0, 0.9)
    low_quality_fraction: float = 0.06
    doublet_fraction: float = 0.05
    doublet_kind_shares: Mapping[str, float] = field(
        default_factory=lambda: {"heterotypic_distinct": 0.6, "heterotypic_similar": 0.25,
                                 "homotypic": 0.15})
    doublet_gain_range: tuple[float, float] = (1.2, 2.0)
    programme_fold: float = 2.0
    momf_expansion: float = 3.5
    effect_sets: tuple[str, ...] = (
        "efferocytosis_combined", "il10_ligand_receptor", "il10_stat3_response",
    )  # fmt: skip
    il10_ligand_fold: float = 1.5
    il10_receptor_fold: float = 2.5
    il10_response_set: str = "il10_stat3_response"
    il10_response_fold: float = 2.0
    ps_receptor_fold: float = 1.5
    bridging_sender: str = "endothelial"
    bridging_fold: float = 2.0
    monocyte_position_beta: tuple[float, float] = (1.1, 1.5)
    momf_position_beta: tuple[tuple[float, float], ...] = ((1.8, 1.2), (2.5, 1.0))
    trajectory_il10_set: str = "il10_ligand_receptor"
    trajectory_il10_fold: float = 3.0
    formats: Mapping[str, str] = field(
        default_factory=lambda: {
            "lung_control": "10x_mtx_v3",
            "lung_MSC": "10x_mtx_v2",
            "liver_control": "10x_h5",
            "liver_MSC": "h5ad",
        }
    )

    @classmethod
    def from_config(cls, demo: Mapping) -> DemoSpec:
        """The spec with ``seed``, ``cells_per_sample`` and ``replicates`` from the config's
        ``demo`` section (validated, defaults filled); the model parameters as above."""
        return cls(seed=demo["seed"], cells_per_sample=demo["cells_per_sample"],
                   replicates=demo["replicates"])

    def check(self) -> None:
        """Raise ValueError naming the parameter when the spec cannot be simulated."""
        unknown = [t for t in self.tissues if t not in TISSUE_COMPOSITION]
        problems = [f"tissues {unknown} are not among {sorted(TISSUE_COMPOSITION)}"] * bool(
            unknown)
        if len(self.batch_library_factors) != len(self.batches):
            problems.append("batch_library_factors needs one factor per batch")
        if len(self.momf_position_beta) != len(self.conditions):
            problems.append("momf_position_beta needs one Beta shape per condition")
        if set(self.doublet_kind_shares) - set(DOUBLET_KINDS) or not np.isclose(
                sum(self.doublet_kind_shares.values()), 1.0):
            problems.append(f"doublet_kind_shares must give shares of {DOUBLET_KINDS} "
                            "summing to 1")
        low, high = self.doublet_gain_range
        if not 1.0 <= low <= high <= 2.0:
            problems.append("doublet_gain_range must lie within [1, 2]")
        if self.low_quality_fraction + self.doublet_fraction >= 1:
            problems.append("low_quality_fraction + doublet_fraction must stay below 1")
        if problems:
            raise ValueError("demo spec: " + "; ".join(problems))


@dataclass(frozen=True)
class GeneEffect:
    """A planted condition effect: ``genes`` x ``fold`` in ``cell_types`` of ``tissue``, in
    every non-reference condition."""

    name: str
    tissue: str
    cell_types: tuple[str, ...]
    genes: tuple[str, ...]
    fold: float


def planted_gene_effects(spec: DemoSpec, gene_sets: Mapping[str, Sequence[str]]
                         ) -> list[GeneEffect]:
    """The condition effects of ``spec`` for its tissues (see the module docstring)."""
    missing = [s for s in (*spec.effect_sets, spec.il10_response_set,
                           spec.trajectory_il10_set) if s not in gene_sets]
    if missing:
        raise ValueError(f"demo gene sets {missing} are not in the programme GMT")
    programme = tuple(sorted(set().union(*[set(gene_sets[s]) for s in spec.effect_sets])))
    effects = [
        GeneEffect("macrophage_programme", tissue,
                   tuple(ct for ct in TISSUE_COMPOSITION[tissue] if ct in MACROPHAGES),
                   programme, spec.programme_fold)
        for tissue in spec.tissues
    ]
    if LIVER in spec.tissues:
        effects += [
            GeneEffect("il10_ligand", LIVER, ("momf",), ("Il10",), spec.il10_ligand_fold),
            GeneEffect("il10_receptor", LIVER, IL10_RECEIVERS, IL10_RECEPTOR,
                       spec.il10_receptor_fold),
            GeneEffect("il10_response", LIVER, IL10_RECEIVERS,
                       tuple(gene_sets[spec.il10_response_set]), spec.il10_response_fold),
        ]
    if LUNG in spec.tissues:
        if spec.bridging_sender not in TISSUE_COMPOSITION[LUNG]:
            raise ValueError(f"bridging_sender {spec.bridging_sender!r} is not a lung cell "
                             f"type: use one of {sorted(TISSUE_COMPOSITION[LUNG])}")
        effects += [
            GeneEffect("ps_receptor", LUNG, ("alveolar_macrophage",), PS_RECEPTORS,
                       spec.ps_receptor_fold),
            GeneEffect("bridging_ligand", LUNG, (spec.bridging_sender,), BRIDGING_LIGANDS,
                       spec.bridging_fold),
        ]
    return effects


def background_symbols() -> list[str]:
    """Real mouse gene symbols shipped with the package (Tabula Muris lung channel)."""
    ref = resources.files("mscflow") / "data" / "tabula_muris_mouse_symbols.txt.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as handle:
        return [line.strip() for line in handle if line.strip()]


def build_gene_universe(
    gene_sets: Mapping[str, Sequence[str]], n_background: int, rng: np.random.Generator
) -> list[str]:
    """Set genes, mitochondrial, ribosomal and haemoglobin genes, then background genes."""
    wanted: list[str] = []
    for genes in gene_sets.values():
        wanted.extend(genes)
    symbols = background_symbols()
    ribo_hb = [s for s in symbols if s.startswith(("Rps", "Rpl", "Hba-", "Hbb-"))][:80]
    fixed = list(dict.fromkeys([*wanted, *MITO_GENES, *ribo_hb]))
    pool = np.array(sorted(set(symbols) - set(fixed)))
    extra = rng.choice(pool, size=min(n_background, len(pool)), replace=False)
    return fixed + sorted(extra.tolist())


def cell_type_profiles(
    genes: Sequence[str],
    markers: Mapping[str, Sequence[str]],
    cell_types: Sequence[str],
    spec: DemoSpec,
    rng: np.random.Generator,
    floors: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Relative expression profile (sums to 1 without mitochondrial genes) per cell type.

    ``floors`` maps a cell type to the gene indices it expresses at least at the mean
    abundance of a non-ribosomal gene times ``spec.programme_baseline`` (its planted genes).
    """
    index = {g: i for i, g in enumerate(genes)}
    n = len(genes)
    is_mito = np.array([g.startswith("mt-") for g in genes])
    is_ribo = np.array([g.startswith(("Rps", "Rpl")) for g in genes])
    base = rng.gamma(0.5, 1.0, n)
    base[is_ribo] *= 25.0
    base[is_mito] = 0.0
    marker_genes = set().union(*[set(markers.get(ct, ())) for ct in cell_types])
    background_idx = np.array(
        [i for i, g in enumerate(genes) if g not in marker_genes and not is_mito[i]]
    )
    floor = np.log(base[~is_ribo & ~is_mito].mean() * spec.programme_baseline)
    profiles = {}
    for ct in cell_types:
        log_prof = np.log(base + 1e-3) + rng.normal(0.0, 0.25, n)
        own = [index[g] for g in markers.get(ct, ()) if g in index]
        log_prof[own] = np.log(base[own].mean() + 1.0) + np.log(spec.marker_fold)
        if ct in MACROPHAGES:
            pan = [index[g] for g in markers.get("pan_macrophage", ()) if g in index]
            log_prof[pan] = np.log(base[pan].mean() + 1.0) + np.log(spec.marker_fold) - 0.5
        planted = (floors or {}).get(ct)
        if planted is not None and len(planted):
            log_prof[planted] = np.maximum(log_prof[planted], floor)
        type_genes = rng.choice(background_idx, size=spec.n_type_genes, replace=False)
        log_prof[type_genes] += np.log(spec.type_gene_fold)
        prof = np.exp(log_prof)
        prof[is_mito] = 0.0
        profiles[ct] = prof / prof.sum()
    return profiles


def batch_of(spec: DemoSpec, tissue: str, condition: str, replicate: int) -> str:
    """The batch of a sample: replicates alternate, shifted by tissue and condition so every
    tissue and every condition holds every batch."""
    shift = spec.tissues.index(tissue) + spec.conditions.index(condition)
    return spec.batches[(replicate - 1 + shift) % len(spec.batches)]


class DemoModel:
    """Expression model of the demo: cell-type profiles, planted condition folds, the liver
    continuum and the batch factors. ``profile`` gives a cell's relative expression before
    batch effects, ``expected_profile`` its mean over a cell type (the truth's reference).
    """

    def __init__(self, spec: DemoSpec, programme_sets: Mapping[str, Sequence[str]],
                 marker_sets: Mapping[str, Sequence[str]], rng: np.random.Generator) -> None:
        spec.check()
        self.spec = spec
        self.genes = build_gene_universe({**programme_sets, **marker_sets},
                                         spec.n_background_genes, rng)
        self.index = {g: i for i, g in enumerate(self.genes)}
        self.is_mito = np.array([g.startswith("mt-") for g in self.genes])
        self.effects = planted_gene_effects(spec, programme_sets)
        self.folds = self._fold_vectors()
        all_types = sorted({ct for comp in TISSUE_COMPOSITION.values() for ct in comp})
        markers = dict(marker_sets)
        if "pan_macrophage" in programme_sets:
            markers["pan_macrophage"] = list(programme_sets["pan_macrophage"])
        missing = [ct for ct in all_types if ct not in markers]
        if missing:
            raise ValueError(f"marker GMT lacks sets for demo cell types {missing}")
        floors = {ct: np.flatnonzero(np.max([f for (_, c), f in self.folds.items() if c == ct],
                                            axis=0) > 1)
                  for ct in {c for _, c in self.folds}}
        self.profiles = cell_type_profiles(self.genes, markers, all_types, spec, rng, floors)
        self.ramp_genes = self.mask(programme_sets[spec.trajectory_il10_set])
        self.planted_genes = np.any([f != 1 for f in self.folds.values()], axis=0) | (
            self.ramp_genes)
        self.batch_genes, self.batch_factors = self._batch_factors(rng)
        self._cache: dict[tuple, np.ndarray] = {}

    def mask(self, genes: Sequence[str]) -> np.ndarray:
        """Boolean mask of ``genes`` over the gene universe."""
        wanted = set(genes)
        return np.array([g in wanted for g in self.genes])

    def _fold_vectors(self) -> dict[tuple[str, str], np.ndarray]:
        """(tissue, cell type) -> per-gene fold in the non-reference conditions."""
        folds: dict[tuple[str, str], np.ndarray] = {}
        for effect in self.effects:
            idx = [self.index[g] for g in effect.genes if g in self.index]
            for ct in effect.cell_types:
                vec = folds.setdefault((effect.tissue, ct), np.ones(len(self.genes)))
                vec[idx] *= effect.fold
        return folds

    def _batch_factors(self, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """The genes batches shift and each batch's per-gene factors."""
        eligible = np.flatnonzero(~self.is_mito & ~self.planted_genes)
        n_shifted = int(round(self.spec.batch_gene_fraction * len(eligible)))
        shifted = np.sort(rng.choice(eligible, size=n_shifted, replace=False))
        factors = {}
        for batch in self.spec.batches:
            vec = np.ones(len(self.genes))
            vec[shifted] = np.exp(rng.normal(0.0, self.spec.batch_log_sd, n_shifted))
            factors[batch] = vec
        return shifted, factors

    def on_lineage(self, tissue: str, cell_type: str) -> bool:
        """True for the cells of the liver monocyte -> MoMF continuum."""
        return tissue == LIVER and cell_type in LINEAGE

    def position_shape(self, condition: str, cell_type: str) -> tuple[float, float, float]:
        """(a, b, offset): a cell's position is offset + 0.5 x Beta(a, b)."""
        if cell_type == LINEAGE[0]:
            return (*self.spec.monocyte_position_beta, 0.0)
        return (*self.spec.momf_position_beta[self.spec.conditions.index(condition)], 0.5)

    def draw_position(self, tissue: str, condition: str, cell_type: str,
                      rng: np.random.Generator) -> float:
        """A cell's position on the continuum (NaN off the lineage)."""
        if not self.on_lineage(tissue, cell_type):
            return float("nan")
        a, b, offset = self.position_shape(condition, cell_type)
        return offset + 0.5 * float(rng.beta(a, b))

    def profile(self, tissue: str, condition: str, cell_type: str,
                position: float = float("nan")) -> np.ndarray:
        """Relative expression (non-mitochondrial part sums to 1) before batch effects."""
        key = (tissue, condition, cell_type)
        lineage = self.on_lineage(tissue, cell_type) and not np.isnan(position)
        if not lineage and key in self._cache:
            return self._cache[key]
        if lineage:
            start, end = (np.log(self.profiles[ct] + 1e-300) for ct in LINEAGE)
            prof = np.exp((1.0 - position) * start + position * end)
            rise = np.clip(3.0 * position - 2.0, 0.0, 1.0)
            prof[self.ramp_genes] *= self.spec.trajectory_il10_fold ** rise
            prof[self.is_mito] = 0.0
        else:
            prof = self.profiles[cell_type]
        if condition != self.spec.conditions[0] and (tissue, cell_type) in self.folds:
            prof = prof * self.folds[(tissue, cell_type)]
        prof = prof / prof.sum()
        if not lineage:
            self._cache[key] = prof
        return prof

    def expected_profile(self, tissue: str, condition: str, cell_type: str) -> np.ndarray:
        """Mean relative expression of a cell type (over the positions on the continuum)."""
        if not self.on_lineage(tissue, cell_type):
            return self.profile(tissue, condition, cell_type)
        a, b, offset = self.position_shape(condition, cell_type)
        grid = (np.arange(400) + 0.5) / 400
        weights = stats.beta.pdf(grid, a, b)
        weights /= weights.sum()
        return sum(w * self.profile(tissue, condition, cell_type, offset + 0.5 * u)
                   for u, w in zip(grid, weights, strict=True))

    def composition(self, tissue: str, condition: str) -> dict[str, float]:
        """Cell-type proportions of a sample (liver MoMF expanded in treated conditions)."""
        comp = dict(TISSUE_COMPOSITION[tissue])
        if tissue == LIVER and condition != self.spec.conditions[0]:
            comp["momf"] *= self.spec.momf_expansion
        total = sum(comp.values())
        return {ct: p / total for ct, p in comp.items()}
