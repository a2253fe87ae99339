"""Drift detection: detectors over several signals, calibrated to an alarm budget, with hysteresis and saved state.

Signals, per source (news and chat drift differently) and per serving model version:

- ``error``: 0/1 error of a labeled prediction, as delayed labels are joined (label-based);
- ``confidence``: the top class probability of each prediction (label-free);
- ``class``: the predicted class, whose mix over blocks of messages is watched (label-free);
- ``embedding``: the mean-pooled encoder embedding of (a sample of) the messages (label-free).

One module per concept: calibration.py turns the alarm budget (an expected run length
between false alarms) into each detector's parameter; detectors.py holds the river-based
detectors on the error, confidence and class signals, embedding.py Hotelling's T² on the
embeddings; config.py names the detectors and splits the budget among those enabled
(:class:`DriftConfig`); engine.py runs them per source and turns alarms into one event
per drift, with state that survives a restart (:class:`DriftEngine`). Everything here is
pure computation (no bus, no database): the monitor role (pipeline/roles/monitor.py)
feeds it and ``aet bench drift-detect`` measures it. The public names are re-exported
here, so ``from aet.pipeline.drift import DriftEngine`` is the way in.
"""

from aet.pipeline.drift.calibration import (
    ADWIN_ARL_TABLE,
    ADWIN_CLOCK,
    KSWIN_ARL_CONSTANT,
    KSWIN_STAT,
    KSWIN_WINDOW,
    PH_ALLOWANCE,
    PH_BLOCK,
    SAFETY,
    adwin_delta,
    chi2_threshold,
    kswin_alpha,
    page_hinkley_threshold,
    siegmund_run_length,
)
from aet.pipeline.drift.config import DEFAULT_DETECTORS, DETECTOR_CLASSES, DETECTORS, SIGNAL_OF, DriftConfig
from aet.pipeline.drift.detectors import AdwinConfidence, AdwinError, Detector, KswinConfidence, PageHinkleyClassMix
from aet.pipeline.drift.embedding import MAX_COMPONENTS, PROJECTION_DIM, HotellingEmbedding, pack, unpack
from aet.pipeline.drift.engine import RIVER_VERSION, STATE_VERSION, Alarm, DriftEngine, SourceDrift

__all__ = [
    "ADWIN_ARL_TABLE",
    "ADWIN_CLOCK",
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "DETECTOR_CLASSES",
    "KSWIN_ARL_CONSTANT",
    "KSWIN_STAT",
    "KSWIN_WINDOW",
    "MAX_COMPONENTS",
    "PH_ALLOWANCE",
    "PH_BLOCK",
    "PROJECTION_DIM",
    "RIVER_VERSION",
    "SAFETY",
    "SIGNAL_OF",
    "STATE_VERSION",
    "AdwinConfidence",
    "AdwinError",
    "Alarm",
    "Detector",
    "DriftConfig",
    "DriftEngine",
    "HotellingEmbedding",
    "KswinConfidence",
    "PageHinkleyClassMix",
    "SourceDrift",
    "adwin_delta",
    "chi2_threshold",
    "kswin_alpha",
    "pack",
    "page_hinkley_threshold",
    "siegmund_run_length",
    "unpack",
]
