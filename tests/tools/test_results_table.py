"""tools/results_table.py: rows from run files only, missing runs shown, links, README block replaced in place."""
from __future__ import annotations

import json

import pytest

from tools import results_table


def _run(tmp_path, name="basic", mdice=0.75, with_eval=True):
    run = tmp_path / "output" / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "model_final.pth").write_bytes(b"x")
    (run / "log.txt").write_text("log\n")
    (run / "model_info.json").write_text(json.dumps({"model": "LGRNet", "params": 1_540_000,
                                                     "gflops_per_clip": 1.714}))
    if with_eval:
        ev = run / "eval" / "ds_test"
        (ev / "vis").mkdir(parents=True)
        (ev / "vis" / "v1.mp4").write_bytes(b"x")
        m = {"mDice": mdice, "mIoU": 0.6, "Dice_LV": 0.8, "Dice_LA": 0.7, "Dice_RA": 0.75, "Dice_RV": 0.75,
             "iteration": 600, "num_samples": 50}
        (ev / "metrics.json").write_text(json.dumps(m))
    return run


def test_rows_come_from_the_run_files_and_missing_runs_are_shown(tmp_path):
    run = _run(tmp_path)
    text = results_table.table([f"BASIC={run}", f"+HTS={tmp_path / 'nope'}"])
    lines = text.splitlines()
    assert lines[2] == ("| BASIC | LGRNet | ds_test | 1.71 | 1.54 M | 0.7500 | 0.6000 | 0.8000 | 0.7000 | 0.7500 | "
                        "0.7500 | 600 | 50 |")
    assert lines[3].startswith("| +HTS | missing |")
    with pytest.raises(FileNotFoundError, match="model_info.json"):
        results_table.table([str(tmp_path / "nope")], strict=True)
    no_eval = _run(tmp_path, "noeval", with_eval=False)
    assert "| noeval | missing |" in results_table.table([str(no_eval)])


def test_links_are_relative_to_the_updated_file_and_only_the_marked_block_changes(tmp_path, capsys):
    run = _run(tmp_path, mdice=0.8123)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:ablation -->\nold table\n<!-- /results:ablation -->\nend\n")
    assert results_table.main([f"BASIC={run}", "--links", "--update", str(readme), "--marker", "ablation"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:ablation -->\n| run |") and text.endswith(
        "<!-- /results:ablation -->\nend\n")
    assert "old table" not in text and "0.8123" in text
    assert "[log](output/basic/log.txt)" in text and "[ckpt](output/basic/checkpoints/model_final.pth)" in text
    assert "[mp4](output/basic/eval/ds_test/vis/v1.mp4)" in text
    capsys.readouterr()
    before = readme.read_text()
    assert results_table.main([str(run), "--update", str(readme), "--marker", "other"]) == 1
    assert "expected exactly one '<!-- results:other -->'" in capsys.readouterr().err
    assert readme.read_text() == before  # nothing lost on error


def test_class_columns_come_from_each_dataset_and_a_missing_class_is_a_dash(tmp_path):
    cardiac = _run(tmp_path, "cardiac")  # an old metrics.json: no class_names, the CardiacUDC order
    camus = tmp_path / "output" / "camus"
    ev = camus / "eval" / "camus_test"
    ev.mkdir(parents=True)
    (camus / "model_info.json").write_text(json.dumps({"model": "UNetBaseline", "params": 1_140_000,
                                                       "gflops_per_clip": None}))
    (ev / "metrics.json").write_text(json.dumps({
        "Dice_LA": 0.81, "Dice_LV_endo": 0.93, "Dice_LV_myo": 0.85, "class_names": ["LV_endo", "LV_myo", "LA"],
        "iteration": 20, "mDice": 0.8633, "mIoU": 0.77, "num_samples": 4}))  # keys sorted, as the evaluator writes
    lines = results_table.table([str(cardiac), str(camus)]).splitlines()
    assert lines[0] == ("| run | model | dataset | GFLOPs/clip | #params | mDice | mIoU | Dice LV | Dice LA | Dice RA | "
                        "Dice RV | Dice LV_endo | Dice LV_myo | iter | samples |")
    assert lines[2].endswith("| 0.8000 | 0.7000 | 0.7500 | 0.7500 | — | — | 600 | 50 |")
    assert lines[3] == ("| camus | UNetBaseline | camus_test | n/a | 1.14 M | 0.8633 | 0.7700 | — | 0.8100 | — | — | "
                        "0.9300 | 0.8500 | 20 | 4 |")
    only = results_table.table([str(camus)]).splitlines()[0]
    assert "Dice LV_endo | Dice LV_myo | Dice LA | iter" in only  # the dataset's own order
    m = json.loads((ev / "metrics.json").read_text())
    (ev / "metrics.json").write_text(json.dumps({**m, "mHD95": 4.25, "EF_MAE": 6.5, "EF_corr": 0.8}))
    lines = results_table.table([str(cardiac), str(camus)]).splitlines()
    assert "| Dice LV_myo | HD95 (mm) | EF MAE | EF r | iter |" in lines[0]
    assert lines[2].endswith("| — | — | — | — | — | 600 | 50 |") and lines[3].endswith("| 4.2500 | 6.5000 | 0.8000 | 20 | 4 |")


def test_main_results_table_uses_the_evaluators_class_columns():
    import main

    text = main.results_table({"camus_test": {"mDice": 0.9, "mIoU": 0.8, "Dice_LV_endo": 0.95, "Dice_LA": 0.85,
                                              "num_samples": 4},
                               "echo_synth_random_test": {"mDice": 0.8, "mIoU": 0.7, "Dice_LV": 0.8,
                                                          "num_samples": 42}})
    lines = text.splitlines()
    assert lines[0] == "| dataset | mDice | mIoU | Dice_LV_endo | Dice_LA | Dice_LV | num_samples |"
    assert lines[2] == "| camus_test | 0.9000 | 0.8000 | 0.9500 | 0.8500 |  | 4 |"
    assert lines[3] == "| echo_synth_random_test | 0.8000 | 0.7000 |  |  | 0.8000 | 42 |"
