"""Salient / camouflaged object metrics, computed by `pysodmetrics` (the field's reference implementation).

Inputs are exactly what that package expects: the prediction as uint8 0..255 and the GT as uint8 (it
binarises the GT at >128 and min-max normalises the prediction), both at the GT's original size.
Reported keys:
    S       structure measure S_alpha (alpha = 0.5)
    wF      weighted F-measure (beta^2 = 1)
    E_mean, E_max, E_adp   enhanced-alignment measure: mean / max over the 256 thresholds, adaptive threshold
    F_mean, F_max, F_adp   F-measure (beta^2 = 0.3): likewise
    MAE     mean absolute error
Every value is the mean over images of the per-image value, as the package averages.
"""

from __future__ import annotations

import numpy as np

SOD_KEYS = ("S", "wF", "E_mean", "E_max", "E_adp", "F_mean", "F_max", "F_adp", "MAE")


class SODMetrics:
    """Accumulates pysodmetrics over (prediction, GT) pairs; `results()` gives the SOD_KEYS."""

    def __init__(self) -> None:
        # Imported here: py_sod_metrics pulls in scikit-learn (seconds), which nothing else needs.
        import py_sod_metrics as sod

        self._s = sod.Smeasure(alpha=0.5)
        self._e = sod.Emeasure()
        self._wf = sod.WeightedFmeasure(beta=1)
        # FmeasureV2 is the package's current F-measure (its Fmeasure class is deprecated); same numbers.
        self._f = sod.FmeasureV2({"f": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)})
        self._mae = sod.MAE()
        self.count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """pred uint8[H, W] in 0..255, gt uint8[H, W] (foreground > 128), same size."""
        if pred.dtype != np.uint8 or gt.dtype != np.uint8:
            raise TypeError(f"pred and gt must be uint8, got {pred.dtype} and {gt.dtype}")
        if pred.shape != gt.shape or pred.ndim != 2:
            raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same 2-D size (score at the "
                             "GT's original size: see segr1.evaluation.to_original_size)")
        for metric in (self._s, self._e, self._wf, self._f, self._mae):
            metric.step(pred=pred, gt=gt)
        self.count += 1

    def results(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no predictions were scored")
        e_curve = self._e.get_results()["em"]
        f_result = self._f.get_results()["f"]
        return {
            "S": float(self._s.get_results()["sm"]),
            "wF": float(self._wf.get_results()["wfm"]),
            "E_mean": float(np.mean(e_curve["curve"])),
            "E_max": float(np.max(e_curve["curve"])),
            "E_adp": float(e_curve["adp"]),
            "F_mean": float(np.mean(f_result["dynamic"])),
            "F_max": float(np.max(f_result["dynamic"])),
            "F_adp": float(f_result["adaptive"]),
            "MAE": float(self._mae.get_results()["mae"]),
        }
