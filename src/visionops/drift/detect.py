"""One verdict from three families of two-sample tests.

- **embeddings**: MMD² with a Gaussian kernel on the bundle's embedding (after a PCA fitted
  on a part of the reference the test does not use), permutation p-value;
- **outputs** (black-box shift detection, Rabanser et al., "Failing Loudly", NeurIPS 2019):
  KS per class probability, label probability or regression target, plus chi-square on the
  predicted classes, Benjamini–Hochberg within the family;
- **images**: KS per image statistic (brightness, contrast, sharpness, saturation, channel
  means, original size, and what a camera or encoder changes: noise, fine detail, JPEG
  blockiness and quality, colourfulness, hue), Benjamini–Hochberg within the family.

A family's p-value is its smallest BH-adjusted p-value (Simes); the overall p-value is the
Bonferroni of the families' p-values, so "drift" is declared falsely at most at rate α
whichever family fires. A family is flagged when its p-value is below α / (families tested),
the same threshold the overall verdict applies, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from visionops.config import DriftSettings
from visionops.drift.features import IMAGE_FEATURES, feature_label, feature_reading
from visionops.drift.samples import Sample, check_compatible
from visionops.drift.stats import (
    benjamini_hochberg,
    bonferroni,
    chi_square_test,
    ks_tests,
    mmd_permutation_test,
)
from visionops.errors import DriftError
from visionops.tasks import Task

__all__ = [
    "ChiSquareTest",
    "DriftResult",
    "DriftTest",
    "FamilyResult",
    "KsTest",
    "MmdTest",
    "TimeWindow",
    "compare",
    "reduce_embeddings",
]

FAMILY_TITLES = {
    "embeddings": "Embeddings (MMD²)",
    "outputs": "Model outputs (KS + chi-square)",
    "images": "Image statistics (KS)",
}


@dataclass(kw_only=True)
class DriftTest:
    """One test of a family: what it compared and how far apart the two samples are.

    Attributes:
        name: What was compared, for people (``brightness``, ``p(cat)``, ``embedding``).
        test: The test (``KS``, ``chi-square``, ``MMD²``).
        statistic: The effect size (KS distance, Cramér's V, MMD²).
        p_value: The test's own p-value.
        p_adjusted: After Benjamini–Hochberg within the family (MMD: its own p-value).
        drifted: Whether this test is among the signals of a drifted family.
    """

    name: str
    test: str
    statistic: float
    p_value: float
    p_adjusted: float = float("nan")
    drifted: bool = False

    def detail(self) -> str:
        """The report's detail column."""
        return ""

    def phrase(self) -> str:
        """What drifted, in a few words (``brightness up 1.20 sd (KS 0.41, p = 0.003)``)."""
        return f"{self.name} ({self.test} {self.statistic:.3g}, p = {self.p_adjusted:.3g})"


@dataclass(kw_only=True)
class KsTest(DriftTest):
    """Kolmogorov–Smirnov on one column (an output or an image statistic).

    Attributes:
        key: The column (``output_3``, ``mean_c0``).
        reference_mean: Its mean in the reference.
        current_mean: Its mean in the current sample.
        shift_sd: The shift of the mean in reference standard deviations (0 when the
            reference is constant).
    """

    test: str = "KS"
    key: str
    reference_mean: float
    current_mean: float
    shift_sd: float

    def detail(self) -> str:
        """Means before and after, and the shift in reference standard deviations."""
        return f"{self.reference_mean:.4g} → {self.current_mean:.4g} ({self.shift_sd:+.2f} sd)"

    def phrase(self) -> str:
        """The column, which way it moved and by how much.

        An image statistic says first what the move means for the pictures:
        ``images are noisier: noise level up 2.10 sd (KS 0.41, p = 0.003)``.
        """
        up = self.current_mean > self.reference_mean
        direction = "up" if up else "down"
        reading = feature_reading(self.key, up)
        # A constant reference (every image 640 px wide) has no spread to count in: the means.
        size = (
            f"{abs(self.shift_sd):.2f} sd"
            if self.shift_sd
            else f"{self.reference_mean:.4g} → {self.current_mean:.4g}"
        )
        test = f"KS {self.statistic:.2f}, p = {self.p_adjusted:.3g}"
        text = f"{self.name} {direction} {size} ({test})"
        return f"{reading}: {text}" if reading else text


@dataclass(kw_only=True)
class ChiSquareTest(DriftTest):
    """Chi-square on the predicted classes; the effect is Cramér's V.

    Attributes:
        chi2: The chi-square statistic.
        reference_counts: Images per predicted class in the reference.
        current_counts: Images per predicted class in the current sample.
    """

    test: str = "chi-square"
    key: str = "predicted_class"
    chi2: float
    reference_counts: list[int]
    current_counts: list[int]

    def detail(self) -> str:
        """The chi-square statistic."""
        return f"χ² = {self.chi2:.3g}"

    def phrase(self) -> str:
        """The predicted-class mix and how strongly it moved."""
        return f"predicted-class mix (Cramér's V {self.statistic:.2f}, p = {self.p_adjusted:.3g})"


@dataclass(kw_only=True)
class MmdTest(DriftTest):
    """MMD² between the embeddings, with a permutation p-value.

    Attributes:
        bandwidth: The Gaussian kernel's σ (median heuristic).
        reference_n: Reference embeddings tested (those PCA was not fitted on).
        current_n: Current embeddings tested.
    """

    name: str = "embedding"
    test: str = "MMD²"
    bandwidth: float
    reference_n: int
    current_n: int

    def detail(self) -> str:
        """How many embeddings were compared."""
        return f"{self.reference_n} vs {self.current_n} images"

    def phrase(self) -> str:
        """The embeddings' distance and its p-value."""
        return f"embeddings (MMD² {self.statistic:.3g}, p = {self.p_value:.3g})"


@dataclass
class FamilyResult:
    """One family of tests.

    Attributes:
        name: ``embeddings``, ``outputs`` or ``images``.
        p_value: The family's p-value (Simes over its BH-adjusted tests; MMD's own p-value).
        drifted: Whether ``p_value`` is below α / families tested.
        tests: One per test.
        note: How it was run (PCA, permutations, which columns), for the report.
    """

    name: str
    p_value: float
    drifted: bool
    tests: list[DriftTest]
    note: str = ""


@dataclass
class DriftResult:
    """The verdict.

    Attributes:
        drifted: Whether any family detected drift (overall false-alarm rate ≤ α).
        p_value: Bonferroni over the families' p-values.
        alpha: The significance level.
        families: The families that could be tested.
        reference_count: Images in the reference.
        current_count: Images in the current sample.
        what_drifted: Short phrases naming the strongest signals, strongest first.
        notes: Families or tests left out and why.
    """

    drifted: bool
    p_value: float
    alpha: float
    families: list[FamilyResult]
    reference_count: int
    current_count: int
    what_drifted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def family(self, name: str) -> FamilyResult | None:
        """The family called ``name``, if it was tested."""
        return next((f for f in self.families if f.name == name), None)


@dataclass(frozen=True)
class TimeWindow:
    """The overall verdict on one time window of the current sample.

    Attributes:
        start: Time of its first record (ISO 8601).
        end: Time of its last record.
        label: Its start, short, for a plot axis.
        n: Records in the window.
        p_value: The overall p-value of its tests.
        drifted: Whether it drifted.
    """

    start: str
    end: str
    label: str
    n: int
    p_value: float
    drifted: bool


def reduce_embeddings(
    reference: NDArray[np.float32],
    current: NDArray[np.float32],
    *,
    dim: int | None,
    fraction: float,
    min_samples: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float32], NDArray[np.float32], str]:
    """PCA fitted on a random ``fraction`` of the reference, applied to the rest and current.

    The fitting part is left out of the test: a projection chosen on the very points tested
    would make them look closer to each other than new points.

    Returns:
        ``(reference rows tested, current, note)``; unchanged when PCA is off, the embedding
        is already small, or the reference is too small to spare a part.
    """
    width = reference.shape[1]
    if dim is None or width <= dim:
        return reference, current, f"{width}-d embeddings, no PCA"
    fit_count = max(dim + 1, round(fraction * len(reference)))
    if len(reference) - fit_count < min_samples:
        return (
            reference,
            current,
            (
                f"{width}-d embeddings, no PCA (the reference of {len(reference)} images is too"
                " small to set a part aside for fitting it)"
            ),
        )
    from sklearn.decomposition import PCA

    order = rng.permutation(len(reference))
    fit, tested = order[:fit_count], order[fit_count:]
    pca = PCA(n_components=min(dim, fit_count - 1), random_state=0)
    pca.fit(reference[fit])
    reduced_reference = pca.transform(reference[tested]).astype(np.float32)
    reduced_current = pca.transform(current).astype(np.float32)
    explained = float(pca.explained_variance_ratio_.sum())
    note = (
        f"PCA {width}→{pca.n_components_} ({explained:.0%} of the variance) fitted on"
        f" {fit_count} reference images that the test leaves out; {len(tested)} tested"
    )
    return reduced_reference, reduced_current, note


def _embedding_family(
    reference: Sample, current: Sample, settings: DriftSettings, rng: np.random.Generator
) -> FamilyResult | str:
    if reference.embeddings is None or current.embeddings is None:
        return "embeddings: not in the reference or the current sample"
    if len(current.embeddings) < settings.min_samples:
        return (
            f"embeddings: only {len(current.embeddings)} current images have one"
            f" (minimum {settings.min_samples})"
        )
    ref, cur, note = reduce_embeddings(
        reference.embeddings,
        current.embeddings,
        dim=settings.pca_dim,
        fraction=settings.pca_fraction,
        min_samples=settings.min_samples,
        rng=rng,
    )
    result = mmd_permutation_test(ref, cur, permutations=settings.permutations, rng=rng)
    row = MmdTest(
        statistic=result.mmd2,
        p_value=result.p_value,
        p_adjusted=result.p_value,
        bandwidth=result.bandwidth,
        reference_n=len(ref),
        current_n=len(cur),
    )
    return FamilyResult(
        "embeddings",
        result.p_value,
        False,
        [row],
        f"{note}; Gaussian kernel σ = {result.bandwidth:.3g} (median heuristic);"
        f" {result.permutations} permutations",
    )


def _ks_rows(
    names: list[str], labels: list[str], ref: NDArray[np.float64], cur: NDArray[np.float64]
) -> list[DriftTest]:
    rows: list[DriftTest] = []
    for result, label in zip(ks_tests(names, ref, cur), labels, strict=True):
        column = names.index(result.name)
        spread = float(np.nanstd(ref[:, column]))
        rows.append(
            KsTest(
                name=label,
                statistic=result.statistic,
                p_value=result.p_value,
                reference_mean=result.reference_mean,
                current_mean=result.current_mean,
                shift_sd=(result.current_mean - result.reference_mean) / spread
                if spread > 0
                else 0.0,
                key=result.name,
            )
        )
    return rows


def _adjust(rows: list[DriftTest]) -> float:
    adjusted = benjamini_hochberg([row.p_value for row in rows])
    for row, value in zip(rows, adjusted, strict=True):
        row.p_adjusted = float(value)
    return float(adjusted.min()) if len(adjusted) else 1.0


def _output_family(reference: Sample, current: Sample, task: Task) -> FamilyResult | str:
    rows: list[DriftTest] = []
    parts: list[str] = []
    if reference.outputs is not None and current.outputs is not None:
        # The task names its columns (p(cat), energy, ...); the key keeps the column index.
        shown = list(task.output_columns(reference.outputs[:1]))
        names = [f"output_{i}" for i in range(reference.outputs.shape[1])]
        shown += names[len(shown) :]
        rows.extend(_ks_rows(names, shown[: len(names)], reference.outputs, current.outputs))
        parts.append("KS on each output column")
    if reference.classes is not None and current.classes is not None:
        count = reference.outputs.shape[1] if reference.outputs is not None else 0
        count = max(count, int(reference.classes.max(initial=0)) + 1)
        count = max(count, int(current.classes.max(initial=0)) + 1)
        chi = chi_square_test(reference.classes, current.classes, count)
        rows.append(
            ChiSquareTest(
                name="predicted class",
                statistic=chi.cramers_v,
                p_value=chi.p_value,
                chi2=chi.statistic,
                reference_counts=chi.reference_counts,
                current_counts=chi.current_counts,
            )
        )
        parts.append("chi-square on predicted classes (effect: Cramér's V)")
    if not rows:
        return "outputs: the current records do not hold the model's full outputs"
    p_value = _adjust(rows)
    return FamilyResult(
        "outputs", p_value, False, rows, "; ".join(parts) + "; Benjamini–Hochberg within family"
    )


def _measured(sample: Sample, name: str) -> int:
    column = sample.features.get(name)
    return 0 if column is None else int(np.isfinite(column).sum())


def _image_family(
    reference: Sample, current: Sample, channels: int, min_samples: int
) -> FamilyResult | str:
    # Serve measures the pixel statistics of a random share of uploads under load
    # (drift.statistics_cpu_share): a statistic is tested where both sides have enough values.
    names = [
        name
        for name in IMAGE_FEATURES
        if _measured(reference, name) >= min_samples and _measured(current, name) >= min_samples
    ]
    measured = _measured(current, "mean")
    if not names:
        if 0 < measured < min_samples:
            return (
                f"images: only {measured} of {current.count} current images have image"
                f" statistics (minimum {min_samples}; serve measures a random share of uploads"
                " under load) — widen the window, or raise drift.statistics_cpu_share"
            )
        return "images: no image statistic is in both the reference and the current sample"
    ref = np.stack([reference.features[n] for n in names], axis=1)
    cur = np.stack([current.features[n] for n in names], axis=1)
    rows = _ks_rows(names, [feature_label(n, channels) for n in names], ref, cur)
    p_value = _adjust(rows)
    sampled = (
        f"; pixel statistics of {measured} of {current.count} current images (a random share"
        " of uploads, measured within drift.statistics_cpu_share)"
        if 0 < measured < current.count
        else ""
    )
    return FamilyResult(
        "images",
        p_value,
        False,
        rows,
        f"KS on {len(names)} image statistics (of the model-sized image; width, height,"
        " noise, fine detail and JPEG blockiness of the upload before resizing; JPEG quality"
        " from the file); Benjamini–Hochberg within family; effect = KS distance, shift in"
        f" reference standard deviations{sampled}",
    )


def compare(
    reference: Sample,
    current: Sample,
    *,
    task: Task,
    settings: DriftSettings,
    channels: int = 3,
    permutations: int | None = None,
) -> DriftResult:
    """Test whether ``current`` differs from ``reference``; one verdict at level α.

    Args:
        reference: The bundle's reference sample.
        current: The current sample.
        task: The bundle's task (``visionops.tasks.task_for(bundle.meta)``): names the
            output columns.
        settings: ``drift.*`` settings (α, permutations, minimum sample size, PCA).
        channels: Image channels (names the channel-mean statistics).
        permutations: Override ``settings.permutations`` (time windows use fewer).

    Returns:
        The verdict, every family's tests and what drifted.

    Raises:
        DriftError: Fewer images than ``drift.min_samples`` on either side, or samples that
            do not match (another embedding size).
    """
    minimum = settings.min_samples
    for side, sample in (("current", current), ("reference", reference)):
        if sample.count < minimum:
            raise DriftError(
                f"the {side} sample has {sample.count} images; drift tests need at least"
                f" {minimum} — "
                + (
                    "collect more traffic (or widen --since / --last)"
                    if side == "current"
                    else "rebuild the reference from a dataset with more held-out images"
                    " (`visionops drift reference RUN DATASET --split val`)"
                )
                + ", or lower drift.min_samples (at your own risk)"
            )
    check_compatible(reference, current)
    rng = np.random.default_rng(settings.seed)
    if permutations is not None:
        settings = settings.model_copy(update={"permutations": permutations})
    notes: list[str] = []
    families: list[FamilyResult] = []
    for outcome in (
        _embedding_family(reference, current, settings, rng),
        _output_family(reference, current, task),
        _image_family(reference, current, channels, settings.min_samples),
    ):
        if isinstance(outcome, str):
            notes.append(outcome)
        else:
            families.append(outcome)
    if not families:
        raise DriftError(
            "nothing to compare: " + "; ".join(notes) + " — re-export the bundle and serve again"
        )
    level = settings.alpha / len(families)
    what: list[tuple[float, str]] = []
    for family in families:
        family.drifted = family.p_value < level
        for row in family.tests:
            row.drifted = bool(family.drifted and row.p_adjusted < level)
            if row.drifted:
                what.append((row.p_adjusted, row.phrase()))
    overall = bonferroni([family.p_value for family in families])
    return DriftResult(
        drifted=overall < settings.alpha,
        p_value=overall,
        alpha=settings.alpha,
        families=families,
        reference_count=reference.count,
        current_count=current.count,
        what_drifted=[text for _, text in sorted(what, key=lambda item: item[0])][:8],
        notes=notes,
    )
