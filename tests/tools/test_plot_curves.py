"""tools/plot_curves.py: series read from metrics.jsonl, a PNG written, bad input named."""
from __future__ import annotations

import json

import pytest

from tools import plot_curves


def _write_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"iteration": i, "loss": 3.0 / i, "loss_ce": 2.0 / i, "loss_ce_aux0": 2.5 / i, "lr": 1e-3 * i,
             "time": 0.1, "data_time": 0.01} for i in (1, 2, 3, 4)]
    rows += [{"iteration": 4, "ds/mDice": 0.5, "ds/mIoU": 0.4, "ds/Dice_LV": 0.6, "ds/IoU_LV": 0.45,
              "ds/frame_mDice": 0.5, "ds/num_samples": 9}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_series_and_png(tmp_path):
    run = _write_run(tmp_path)
    losses, lr, evals = plot_curves.read_series(run)
    assert set(losses) == {"loss", "loss_ce", "loss_ce_aux0"}
    assert losses["loss_ce"] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3), (4, 0.5)]
    assert [v for _, v in lr["lr"]] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3])
    assert set(evals) == {"ds/mDice", "ds/mIoU", "ds/Dice_LV"}  # no per-class IoU, frame means or counts
    assert plot_curves.main([str(run)]) == 0
    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    assert plot_curves.main([str(tmp_path)]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
    run = _write_run(tmp_path)
    (run / "metrics.jsonl").write_text('{"iteration": 1}\nnot json\n')
    assert plot_curves.main([str(run)]) == 1
    err = capsys.readouterr().err
    assert "metrics.jsonl:2" in err and len(err.strip().splitlines()) == 1
