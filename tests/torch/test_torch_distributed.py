"""Multi-process training on PyTorch's own engine: two CPU processes joined by gloo (DistributedDataParallel).

The processes are started with ``torch.multiprocessing`` and meet through a file store in the test's folder (no
network port); ``torchrun`` itself is exercised by the command-line test at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.torch.helpers import run_config
from xraylib import torch_distributed, torch_train
from xraylib.torch_distributed import ShardedBatchSampler
from xraylib.torch_train import train

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
# SqueezeNet has no BatchNorm; with its dropout switched off (_without_dropout: the masks of two processes of half a
# batch cannot be those of one process of the whole batch) nothing but the order of floating-point sums separates
# the two: no augmentation, the same global batch, seed and sample order.
SETTINGS = dict(epochs=3, batch_size=6, image_size=32, num_workers=0, learning_rate=0.001, seed=5, augment="none",
                weighted_sampler=True, lr_schedule="constant", precise_bn=False)


def _without_dropout(build):
    def builder(*args, **kwargs):
        model = build(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model
    return builder


class Interrupted(Exception):
    """Stands in for a kill in the middle of an epoch, in every process at once."""


def _worker(rank: int, store: str, manifest_csv: str, out: str, stop: tuple[int, int] | None) -> None:
    torch.set_num_threads(1)
    torch_train.build_model = _without_dropout(torch_train.build_model)  # this spawned process only
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        manifest = pd.read_csv(manifest_csv)
        cfg = run_config("ddp", "squeezenet", **SETTINGS)

        def hook(epoch, index):
            if stop is not None and (epoch, index) == stop:
                raise Interrupted

        try:
            result = train(cfg, manifest, out, on_batch_end=hook, verbose=False)
        except Interrupted:
            return
        Path(out, f"rank{rank}.json").write_text(json.dumps({"history": result.history.to_dict("list"),
                                                              "resumed_from": result.resumed_from_epoch}))
    finally:
        dist.destroy_process_group()


def _run_two(tmp_path: Path, tiny_manifest: pd.DataFrame, out: Path, stop=None) -> None:
    manifest_csv = tmp_path / "manifest.csv"
    tiny_manifest.to_csv(manifest_csv, index=False)
    store = tmp_path / f"store_{out.name}_{0 if stop is None else 1}"
    store.unlink(missing_ok=True)
    mp.start_processes(_worker, args=(str(store), str(manifest_csv), str(out), stop), nprocs=WORLD, join=True,
                       start_method="spawn")


@pytest.fixture(scope="module")
def single(tiny_manifest, tmp_path_factory):
    cfg = run_config("ddp", "squeezenet", **SETTINGS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_train, "build_model", _without_dropout(torch_train.build_model))
        return train(cfg, tiny_manifest, tmp_path_factory.mktemp("single") / "ddp", verbose=False)


@pytest.fixture(scope="module")
def two(tiny_manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    _run_two(folder, tiny_manifest, folder / "ddp")
    return folder / "ddp"


def test_sharded_batches_together_are_the_one_process_batches():
    base = list(range(17))
    for world in (1, 2, 3):
        shards = [list(ShardedBatchSampler(base, 6, rank, world)) for rank in range(world)]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(ShardedBatchSampler(base, 6, 0, world))
        joined = [sum((s[step] for s in shards), []) for step in range(len(shards[0]))]
        assert joined == [base[0:6], base[6:12], base[12:17]]  # 5 left over: split 3 + 2 (or 2 + 2 + 1)
    assert list(ShardedBatchSampler(list(range(7)), 6, 1, 2)) == [[3, 4, 5]]  # a last part of 1 < 2 is dropped
    with pytest.raises(ValueError, match="global batch"):
        ShardedBatchSampler(base, 1, 0, 2)


def test_two_gloo_processes_train_and_only_rank_zero_writes(two):
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0]["history"] == ranks[1]["history"], "the processes must agree on every reduced figure"
    loss = ranks[0]["history"]["loss"]
    assert loss[-1] < loss[0], f"training loss did not fall: {loss}"
    assert sorted(p.name for p in two.iterdir()) == ["best.pt", "history.csv", "last.pt", "rank0.json", "rank1.json"]
    assert len(pd.read_csv(two / "history.csv")) == SETTINGS["epochs"]
    assert torch.load(two / "best.pt", weights_only=True)["world_size"] == WORLD  # how many processes trained it


def test_two_processes_match_one_process_with_the_same_global_batch(two, single):
    """Measured (2-core AMD EPYC, 2026-11-27): histories differ by at most 1.2e-7, best.pt weights by 6.9e-6, since
    without BatchNorm, dropout and augmentation only the order of the gradient sums differs; tolerances 1e-4."""
    history = pd.DataFrame(json.loads((two / "rank0.json").read_text())["history"])
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        pd.testing.assert_series_equal(history[column], single.history[column], check_exact=False, atol=1e-4,
                                       rtol=0)
    a = torch.load(two / "best.pt", weights_only=True)["model_state"]
    b = torch.load(single.best_path, weights_only=True)["model_state"]
    assert torch.load(single.best_path, weights_only=True)["world_size"] == 1
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)


def test_distributed_run_resumes_after_an_interruption(two, tiny_manifest, tmp_path):
    out = tmp_path / "ddp"
    _run_two(tmp_path, tiny_manifest, out, stop=(2, 1))  # every process stops after batch 1 of epoch 2
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert not (out / "rank0.json").exists()
    _run_two(tmp_path, tiny_manifest, out)
    resumed = json.loads((out / "rank0.json").read_text())
    assert resumed["resumed_from"] == 1
    assert resumed["history"] == json.loads((two / "rank0.json").read_text())["history"]
    a = torch.load(out / "last.pt", weights_only=True)["model_state"]
    b = torch.load(two / "last.pt", weights_only=True)["model_state"]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming"


def test_one_process_context_without_a_process_group(monkeypatch):
    ctx = torch_distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
    assert ctx.sum([1.5, 2]) == [1.5, 2.0]
    ctx.barrier()  # a no-op without a process group
    for world in (None, "1"):  # not under torchrun, or torchrun with one process: nothing is initialised
        if world is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world)
        assert torch_distributed.init_from_env() == torch_distributed.Context()
        assert not dist.is_initialized()


def test_torchrun_launches_the_command_line_training(tiny_manifest, tmp_path):
    """``torchrun --nproc_per_node 2 -m xraylib train-multiclass``, as the README tells a user with N GPUs."""
    manifest_dir = tmp_path / "prepared"
    manifest_dir.mkdir()
    tiny_manifest.to_csv(manifest_dir / "manifest.csv", index=False)
    (manifest_dir / "summary.json").write_text(json.dumps({"source": "tiny test images", "synthetic": True}))
    overrides = [f"train_multiclass.{key}={json.dumps(value)}" for key, value in SETTINGS.items()
                 if key not in ("seed",)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
               "-m", "xraylib", *sum((["--set", o] for o in overrides), []),
               "train-multiclass", "--only", "squeezenet", "--manifest-dir", str(manifest_dir),
               "--out", str(tmp_path / "models"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "training 1 run(s) in 2 process(es), global batch 6" in done.stdout
    assert done.stdout.count("squeezenet: best epoch") == 1  # rank 0 reports, rank 1 stays quiet
    assert (tmp_path / "models" / "squeezenet" / "best.pt").is_file()
    # the notebook's route (one process, same settings and checkpoint folder) reloads the run instead of training it
    again = subprocess.run([sys.executable, *command[command.index("xraylib") - 1:]], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training 1 run(s) in 1 process(es)" in again.stdout
    assert "squeezenet: finished; reloaded from" in again.stdout
