"""benchmarks/ablation.py orchestration with training faked: same seed and budget for every row, further seeds
for BASIC and the best row only, table and seed spread from the run files, finished runs reused."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_MDICE = {"lgrnet_tiny.py": 0.90, "lgrnet_tiny_hts.py": 0.91, "lgrnet_tiny_lgsd.py": 0.93,
              "lgrnet_tiny_hts_lgsd.py": 0.92, "lgrnet_tiny_lgsd_slots.py": 0.89}


def _load():
    spec = importlib.util.spec_from_file_location("ablation_bench", REPO / "benchmarks" / "ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_train(calls):
    def run(cmd, check, cwd, stdout, env):
        config = Path(cmd[cmd.index("--config_file") + 1]).name
        out = Path(cmd[cmd.index("--output_dir") + 1])
        seed = int(next(c for c in cmd if c.startswith("train.seed=")).split("=")[1])
        calls.append((config, seed, [c for c in cmd if c.startswith("train.max_iter")]))
        m = FAKE_MDICE[config] + 0.001 * seed
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / "model_final.pth").write_bytes(b"x")
        (out / "log.txt").write_text("log\n")
        (out / "model_info.json").write_text(json.dumps({"model": "LGRNet", "params": 1_540_000,
                                                         "gflops_per_clip": 1.71}))
        def lgsd(i):  # LGSD's logged gauges: entropy 4.0 then 4.1, spread 0.4 then 0.3
            return {"lgsd_target_entropy": 3.9 + i / 100, "lgsd_target_spread": 0.5 - i / 100} if "lgsd" in config \
                else {}
        (out / "metrics.jsonl").write_text("\n".join(json.dumps({"iteration": i, "loss": 1.0 / i, "time": 0.5,
                                                                 "lr": 1e-3, **lgsd(i)}) for i in (10, 20)) + "\n")
        if "lgsd" in config:
            (out / "config.yaml").write_text("model:\n  lgsd:\n    out_dim: 64\n")
        ev = out / "eval" / "echo_synth_random_test"
        ev.mkdir(parents=True, exist_ok=True)
        (ev / "metrics.json").write_text(json.dumps({"mDice": m, "mIoU": m - 0.05, "Dice_LV": m, "Dice_LA": m,
                                                     "Dice_RA": m, "Dice_RV": m, "iteration": 20,
                                                     "num_samples": 50}))

    return run


def test_rows_seeds_table_and_reuse(tmp_path, monkeypatch):
    mod = _load()
    calls = []
    monkeypatch.setattr(mod.subprocess, "run", _fake_train(calls))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:ablation -->\nold\n<!-- /results:ablation -->\nend\n")
    out = tmp_path / "abl"
    argv = ["--out", str(out), "--update", str(readme), "train.max_iter=20"]
    assert mod.main(argv) == 0
    assert [(c, s) for c, s, _ in calls] == [("lgrnet_tiny.py", 0), ("lgrnet_tiny_hts.py", 0),
                                             ("lgrnet_tiny_lgsd.py", 0), ("lgrnet_tiny_hts_lgsd.py", 0),
                                             ("lgrnet_tiny.py", 1), ("lgrnet_tiny_lgsd.py", 1)]
    assert all(extra == ["train.max_iter=20"] for _, _, extra in calls)  # one budget for every run
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:ablation -->\n") and text.endswith("<!-- /results:ablation -->\nend\n")
    assert "old" not in text
    assert "| +LGSD | LGRNet | echo_synth_random_test | 1.71 | 1.54 M | 0.9300 |" in text
    assert "[log](abl/lgsd_seed0/log.txt)" in text  # links relative to the updated file
    assert "| BASIC | 0, 1 | 0.9000, 0.9010 | 0.9005 ± 0.0005 |" in text
    assert "| +LGSD | 0, 1 | 0.9300, 0.9310 | 0.9305 ± 0.0005 |" in text
    assert (out / "lgsd_seed0" / "curves.png").is_file()
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["best"] == "+LGSD" and len(summary["runs"]) == 6
    calls.clear()
    assert mod.main(argv) == 0  # everything finished: nothing is trained again
    assert calls == []
    assert mod.main(["--spread_rows", "all", *argv]) == 0  # only the missing further-seed runs are trained
    assert [(c, s) for c, s, _ in calls] == [("lgrnet_tiny_hts.py", 1), ("lgrnet_tiny_hts_lgsd.py", 1)]
    assert "| +HTS | 0, 1 | 0.9100, 0.9110 | 0.9105 ± 0.0005 |" in readme.read_text()


def test_variant_rows_only_when_named_and_lgsd_gauges_in_the_table(tmp_path, monkeypatch):
    mod = _load()
    calls = []
    monkeypatch.setattr(mod.subprocess, "run", _fake_train(calls))
    out = tmp_path / "abl"
    assert mod.main(["--out", str(out), "--rows", "BASIC", "+LGSD-slots", "--seeds", "0"]) == 0
    assert [(c, s) for c, s, _ in calls] == [("lgrnet_tiny.py", 0), ("lgrnet_tiny_lgsd_slots.py", 0)]
    text = (out / "ablation.md").read_text()
    # entropy first log 4.0 (iteration 10), mean over the last 100 iterations (10 and 20) 4.05; spread 0.35
    assert "| +LGSD-slots | 0 | 4.00 | 4.05 | 4.16 | 0.350 |" in text
    assert "| BASIC | 0 | " not in text.split("LGSD's teacher targets")[1].split("Wall-clock")[0]
    assert mod.ROWS["+LGSD-slots"] not in [mod.ROWS[r] for r in mod.DEFAULT_ROWS]
