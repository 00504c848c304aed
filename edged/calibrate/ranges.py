"""Per-tensor input ranges of Linear and Conv2d layers for INT8 scales, collected by forward hooks during the
same calibration pass that sums ||X_j||_2 (one pass feeds the mask, 2:4 pruning and the quantization scales).

Per layer: the running max of |x| (amax) and a histogram of |x| for a high percentile. The histogram has a
fixed number of bins over [0, edge); when a batch holds a larger |x|, the edge doubles (adjacent bins are
merged pairwise) until it covers it, so memory stays BINS float64 per layer whatever the data
(2,048 bins: 16 KiB a layer; MobileNetV2's 52 convs: under 1 MiB), and the percentile is exact to one bin
(edge / BINS) of the final histogram.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edged.calibrate.hooks import InputCollector
from edged.sparse.layers import WeightLayer

BINS = 2048
PERCENTILE = 99.99  # what `percentile` returns unless asked for another
AMAX, PCTL = 0, 1  # positions in a layer's range tensor: (amax, percentile)


class AbsHistogram:
    """Histogram of |x| over [0, edge) with BINS bins; the edge doubles to take larger values."""

    def __init__(self) -> None:
        self.edge = 0.0
        self.counts = torch.zeros(BINS, dtype=torch.float64)
        self.amax = 0.0

    def add(self, x: Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        low, high = torch.aminmax(x)  # no |x| copy: amax = max(-min, max)
        top = max(-float(low), float(high))
        if not math.isfinite(top):
            raise ValueError("a calibration activation is not finite (inf or nan)")
        self.amax = max(self.amax, top)
        if top == 0.0:
            self.counts[0] += x.numel()
            return
        if self.edge == 0.0:
            self.edge = top
        while top > self.edge:
            # (BINS,) -> (BINS/2,) pairwise sums, then zeros for the new upper half: the edge doubles
            halved = self.counts.view(BINS // 2, 2).sum(1)
            self.counts = torch.cat([halved, torch.zeros(BINS // 2, dtype=torch.float64)])
            self.edge *= 2.0
        # signed histogram over [-edge, edge] (2 * BINS bins, x itself: no |x| temporary), folded onto |x|:
        # bin BINS + i holds [i, i + 1) * edge / BINS, bin BINS - 1 - i its mirror
        signed = torch.histc(x.float(), 2 * BINS, -self.edge, self.edge).double().cpu()  # (2 * BINS,)
        self.counts += signed[BINS:] + signed[:BINS].flip(0)

    def percentile(self, q: float = PERCENTILE) -> float:
        """The upper edge of the bin where the cumulative share first reaches q %, at most amax."""
        total = float(self.counts.sum())
        if total == 0.0 or self.edge == 0.0:
            return 0.0
        cdf = self.counts.cumsum(0) / total
        index = int(torch.searchsorted(cdf, torch.tensor([q / 100.0], dtype=torch.float64)).clamp(max=BINS - 1))
        return min((index + 1) * self.edge / BINS, self.amax)


class RangeCollector(InputCollector):
    """Context manager: while active, every forward of the given layers adds its input to their histograms."""

    def __init__(self, layers: dict[str, WeightLayer]) -> None:
        super().__init__(layers)
        self.histograms: dict[str, AbsHistogram] = {name: AbsHistogram() for name in layers}

    def add(self, name: str, layer: nn.Module, x: Tensor) -> None:
        self.histograms[name].add(x)

    def ranges(self, q: float = PERCENTILE) -> dict[str, Tensor]:
        """weight name -> (amax, q-th percentile of |x|) of the layer's input, float64 (2,)."""
        return {name: torch.tensor([h.amax, h.percentile(q)], dtype=torch.float64)
                for name, h in self.histograms.items() if h.counts.sum() > 0}
