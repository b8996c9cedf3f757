"""Layer 4, beside jobs: training code, apart from serving (serve, search, jobs never import it).

The trainers share one loop (:mod:`.loop`: epochs, batches, steps, held-out figures, best
epoch), one retrieval metric (:mod:`lookalike.core.metrics`) and one progress type
(:mod:`lookalike.core.progress`):

- :mod:`.head`: a two-tower projection head on frozen backbone features;
- :mod:`.finetune`: the backbone's last blocks with the head (imports torch at import time);
- :mod:`.localizer`: the garment localiser from per-pixel masks;
- :mod:`.candidate`: any of them written as a registry version with its figures;
- :mod:`.clicks`: shoppers' clicked pairs (``lookalike events export-pairs``) as training pairs.

Importing this package does not import torch; training calls do.
"""

from __future__ import annotations

from lookalike.training.candidate import PairSet, TrainedCandidate, holdout, train_candidate
from lookalike.training.clicks import ClickPairs, read_click_pairs
from lookalike.training.head import TrainConfig, TrainResult, train_head

__all__ = [
    "ClickPairs",
    "PairSet",
    "TrainConfig",
    "TrainResult",
    "TrainedCandidate",
    "holdout",
    "read_click_pairs",
    "train_candidate",
    "train_head",
]
