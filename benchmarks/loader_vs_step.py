#!/usr/bin/env python
"""Is the data loader ever the bottleneck? Loader clips/s vs training-step clips/s for a config.

    python benchmarks/loader_vs_step.py --config_file configs/cardiac/unet_tiny.py [--iters 30] [key=value ...]
    python benchmarks/loader_vs_step.py --fixture camus|echonet_dynamic|sunseg [--config_file ...]

``--fixture`` writes that dataset's raw layout (``data_schedule/synthetic/raw_fixtures.py``) into a temporary
folder at about the real frame size and length (CAMUS half sequences ~20 frames at 584×780, EchoNet AVIs of 100
MJPG frames at 112², SUN-SEG cases of 30 JPEGs at 540×640; sizes from the public releases, rounded) and
benchmarks that dataset's ``unet_tiny`` config on it (the first pass through a video decodes and caches it, as
in a real first epoch; the warm-up excludes part of that).

Loader: iterate the real training loader (mapper, augmentation, collate) with num_workers 0 and the config's
value, no model. Step: forward + backward + optimizer step of the config's model on one fixed batch (data time
excluded). Prints clips/s for each and the ratio; the loader is fast enough when loader clips/s > step clips/s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import data_schedule  # noqa: E402,F401
import evaluators  # noqa: E402,F401
import models  # noqa: E402,F401
from core.config import load_config  # noqa: E402
from data_schedule.build import build_train_loader  # noqa: E402
from trainers.build import build_optimizer  # noqa: E402
from trainers.train_loop import build_model  # noqa: E402


def loader_rate(cfg, workers: int, iters: int) -> float:
    loader = build_train_loader(list(cfg.data.train), cfg.data.train_mapper, cfg.train.batch_size, workers,
                                cfg.train.seed)
    it = iter(loader)
    for _ in range(min(3, iters)):  # warm-up: worker start, page cache
        next(it)
    t = time.perf_counter()
    for _ in range(iters):
        next(it)
    return iters * cfg.train.batch_size / (time.perf_counter() - t)


def step_rate(cfg, iters: int) -> float:
    model = build_model(cfg, torch.device("cpu"))
    opt = build_optimizer(model, cfg.optim)
    loader = build_train_loader(list(cfg.data.train), cfg.data.train_mapper, cfg.train.batch_size, 0, 0)
    batch = next(iter(loader))
    for i in range(iters + 2):
        if i == 2:
            t = time.perf_counter()
        loss = sum(model(batch).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return iters * cfg.train.batch_size / (time.perf_counter() - t)


FIXTURES = {  # family -> (writer arguments at about the real size, the dataset's config)
    "camus": (dict(patients=tuple(range(1, 9)), frames=20, size=(584, 780)), "configs/camus/unet_tiny.py"),
    "echonet_dynamic": (dict(videos=12, frames=100, size=112, codec="MJPG"), "configs/echonet_dynamic/unet_tiny.py"),
    "sunseg": (dict(train_cases=6, test_cases=1, frames=30, size=(540, 640)), "configs/sunseg/unet_tiny.py"),
}


def write_fixture(family: str, base: Path) -> None:
    from data_schedule.synthetic import raw_fixtures

    folder = {"camus": "CAMUS", "echonet_dynamic": "EchoNet-Dynamic", "sunseg": "SUN-SEG"}[family]
    writer = {"camus": raw_fixtures.write_camus, "echonet_dynamic": raw_fixtures.write_echonet,
              "sunseg": raw_fixtures.write_sunseg}[family]
    writer(base / folder, **FIXTURES[family][0])


def main() -> None:
    import os
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_file", default=None, help="default: configs/cardiac/unet_tiny.py, or the fixture's")
    p.add_argument("--fixture", choices=sorted(FIXTURES), help="benchmark on a generated copy of this dataset")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    overrides = list(args.overrides)
    config = args.config_file or (FIXTURES[args.fixture][1] if args.fixture else "configs/cardiac/unet_tiny.py")
    if args.fixture:
        base = Path(tempfile.mkdtemp(prefix=f"loader_{args.fixture}_"))
        os.environ.setdefault("MEDVIDSEG_CACHE", str(base / "cache"))
        write_fixture(args.fixture, base)
        overrides.append(f"data.roots.{args.fixture}={base}")
        print(f"{args.fixture} fixture in {base}")
    cfg = load_config(config, overrides)
    from main import set_roots

    set_roots(cfg)  # data.roots and the bad-data policy, as main does
    print(f"torch threads {torch.get_num_threads()}, batch {cfg.train.batch_size}, "
          f"clip {cfg.data.train_mapper.clip_len} frames at {list(cfg.data.train_mapper.size)}")
    step = step_rate(cfg, args.iters)
    print(f"training step      : {step:8.1f} clips/s")
    for w in sorted({0, int(cfg.data.num_workers)}):
        rate = loader_rate(cfg, w, args.iters)
        print(f"loader, {w} workers : {rate:8.1f} clips/s  ({rate / step:.1f}x the step rate)")


if __name__ == "__main__":
    main()
