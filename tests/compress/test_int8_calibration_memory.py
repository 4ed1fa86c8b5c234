"""ORT's histogram calibrators (percentile, entropy) keep every calibrated tensor of every batch before building
histograms (2.8 GB for 512 W0 images, a whole run's peak); slimship feeds them a few batches at a time."""

from __future__ import annotations

import numpy as np
import pytest

from tests.package.conftest import tiny_graph


@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_histogram_calibration_sees_a_few_batches_at_a_time(tmp_path, monkeypatch, method):
    from onnxruntime.quantization import calibrate

    from slimship.compress.int8 import quantize as q

    seen: list[int] = []
    original = calibrate.HistogramCalibrater.collect_data

    def recording(self, reader):
        items = []
        while (item := reader.get_next()) is not None:
            items.append(item)
        seen.append(len(items))

        class Again(calibrate.CalibrationDataReader):
            def __init__(self):
                self.it = iter(items)

            def get_next(self):
                return next(self.it, None)

        return original(self, Again())

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", recording)
    opt = q._optimize(tiny_graph(), str(tmp_path))
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((4, 3, 8, 8)).astype(np.float32) for _ in range(7)]
    out = q.quantize_one(opt, calib, method=method, keep_fp32="none", reduce_range=True, per_channel=True,
                         percentile=99.9, tmp=str(tmp_path))
    assert len(out) > 0
    if method == "percentile":
        assert seen and max(seen) <= q.HISTOGRAM_CHUNK_BATCHES and sum(seen) == 7
    else:  # MinMax is not a histogram calibrator: untouched
        assert seen == []
