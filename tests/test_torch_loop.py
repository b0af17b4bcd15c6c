"""The shared torch loop: seeded determinism, resume after a killed run, 2-process data parallel (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tests.helpers import free_port

SCRIPT = textwrap.dedent('''
    """Train a small net with tandem's loop; save its final weights (run by the tests, alone or under torchrun)."""
    import os, sys, time
    import numpy as np, torch
    from torch import nn
    from tandem.learners.torch_loop import LoopConfig, fit

    out, checkpoint, epochs, dropout, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), \\
        float(sys.argv[5])
    deadline = time.monotonic() + float(sys.argv[6]) if len(sys.argv) > 6 else None
    rank = int(os.environ.get("RANK", "0"))
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 8)).astype(np.float32)
    y = torch.as_tensor((X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64))
    Xv = rng.normal(size=(128, 8)).astype(np.float32)
    yv = torch.as_tensor((Xv[:, 0] + Xv[:, 1] * Xv[:, 2] > 0).astype(np.int64))
    build = lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 2))
    result = fit(build, X, y, Xv, yv, nn.CrossEntropyLoss(), LoopConfig(max_epochs=epochs, patience=None,
                 batch_size=64, seed=3), checkpoint=None if checkpoint == "-" else checkpoint,
                 on_epoch=lambda *_: time.sleep(pause * (1 + rank)), deadline=deadline)
    torch.save({k: v for k, v in result.net.state_dict().items()}, f"{out}.rank{rank}.pt")
    said = f"resumed_from {result.resumed_from} epochs_run {result.epochs_run}"
    open(f"{out}.rank{rank}.txt", "w").write(said)  # its own file: two ranks' prints can interleave on one stdout
    print(said, flush=True)
    if "WORLD_SIZE" in os.environ:
        torch.distributed.destroy_process_group()
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loop") / "train_small.py"
    path.write_text(SCRIPT)
    return path


def run(script: Path, out: Path, checkpoint: str = "-", epochs: int = 12, dropout: float = 0.2,
        pause: float = 0.0, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, str(script), str(out), checkpoint, str(epochs), str(dropout), str(pause)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_gives_the_same_model(script, tmp_path):
    run(script, tmp_path / "a")
    run(script, tmp_path / "b")
    assert same(weights(tmp_path / "a.rank0.pt"), weights(tmp_path / "b.rank0.pt"))


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_model(script, tmp_path):
    run(script, tmp_path / "whole", epochs=20)
    checkpoint = tmp_path / "ckpt" / "loop.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "crashed"), str(checkpoint), "20", "0.2",
                             "0.25"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    epoch = 0
    while time.monotonic() < deadline and epoch < 5:
        time.sleep(0.1)
        if checkpoint.exists():
            epoch = int(torch.load(checkpoint, weights_only=True)["epoch"])
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no chance to clean up
    proc.wait(timeout=10)
    assert 5 <= epoch < 20 and not (tmp_path / "crashed.rank0.pt").exists()
    out = run(script, tmp_path / "crashed", checkpoint=str(checkpoint), epochs=20)
    resumed = int(out.split("resumed_from")[1].split()[0])
    assert resumed >= 5 and "epochs_run 20" in out
    assert same(weights(tmp_path / "crashed.rank0.pt"), weights(tmp_path / "whole.rank0.pt"))
    assert not list(checkpoint.parent.glob(".*.tmp"))  # only whole checkpoints, never a half-written one


def test_a_checkpoint_of_another_run_is_not_resumed(script, tmp_path):
    checkpoint = tmp_path / "loop.pt"
    run(script, tmp_path / "first", checkpoint=str(checkpoint), epochs=6)
    out = run(script, tmp_path / "other", checkpoint=str(checkpoint), epochs=9)  # another config: starts afresh
    assert "resumed_from 0" in out and "epochs_run 9" in out


def test_two_processes_with_gloo_train_the_same_model_as_one(script, tmp_path):
    run(script, tmp_path / "single", dropout=0.0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", str(script), str(tmp_path / "ddp"), "-", "12", "0.0", "0"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = weights(tmp_path / "ddp.rank0.pt"), weights(tmp_path / "ddp.rank1.pt")
    assert same(rank0, rank1)  # every process holds the same model
    single = weights(tmp_path / "single.rank0.pt")
    for k in single:  # and it is the model one process trains on the whole batches (to float rounding)
        torch.testing.assert_close(rank0[k], single[k], atol=1e-5, rtol=1e-4)


def test_processes_that_read_the_deadline_at_different_times_stop_together(script, tmp_path):
    """Each process reads its own clock, here 0.2 s apart every epoch (rank 1 is slower): they agree to stop at the
    first epoch where any of them is past the deadline, instead of one leaving the others in a collective."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", str(script), str(tmp_path / "ddp"), "-", "1000", "0.0",
                           "0.2", "3.0"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [int((tmp_path / f"ddp.rank{rank}.txt").read_text().split()[-1]) for rank in (0, 1)]
    assert runs[0] == runs[1] and 1 <= runs[0] < 1000, runs
    assert same(weights(tmp_path / "ddp.rank0.pt"), weights(tmp_path / "ddp.rank1.pt"))


def test_a_failed_run_is_told_by_the_workers_own_error_not_torchrun_s_summary():
    from tandem.learners.distributed import workers_error

    output = "\n".join([
        "[rank1]: terminate called after throwing an instance of 'gloo::IoException'",
        "[rank1]:   what():  [../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500",
        "E1207 torch/distributed/elastic/multiprocessing/api.py: failed (exitcode: -6) local_rank: 1",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:",
        "============================================================",
        "tandem.learners.ddp_worker FAILED",
        "  error_file: <N/A>",
        "  traceback : Signal 6 (SIGABRT) received by PID 15701",
        "============================================================"])
    said = workers_error(output)
    assert said.startswith("[rank1]: terminate called after throwing an instance of 'gloo::IoException'")
    assert "Connection closed by peer" in said and "error_file" not in said
    assert workers_error("one\ntwo\nthree\nfour") == "two | three | four"  # nothing named: the last lines


def test_bf16_autocast_on_cpu_trains_in_bf16_and_auto_follows_the_cpu():
    import numpy as np
    from torch import nn

    from tandem.learners.torch_loop import LoopConfig, autocast_dtype, cpu_has_native_bf16, fit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 8)).astype(np.float32)
    y = torch.as_tensor((X[:, 0] - X[:, 1] > 0).astype(np.int64))
    result = fit(lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)), X[:400], y[:400], X[400:],
                 y[400:], nn.CrossEntropyLoss(), LoopConfig(max_epochs=15, patience=None, batch_size=64,
                                                            lr=5e-3, precision="bf16"))
    assert result.precision == "bf16"
    assert result.curve["valid"][-1] < 0.5 * result.curve["valid"][0]  # it learns in bf16 too
    with torch.no_grad():
        accuracy = (result.net(torch.as_tensor(X[400:])).argmax(1) == y[400:]).float().mean()
    assert accuracy > 0.9
    cpu = torch.device("cpu")
    assert autocast_dtype(LoopConfig(precision="fp32"), cpu) is None
    assert autocast_dtype(LoopConfig(precision="auto"), cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_the_linear_schedule_falls_from_the_rate_to_a_step_above_zero_and_the_others_keep_theirs():
    """"linear" (a fitted network going on over all rows) starts at the full rate, with no warm-up, and ends at
    lr / horizon; "constant" is flat; "cosine" warms up at 0.3 of the rate and then decays."""
    from tandem.learners.torch_loop import LoopConfig

    linear = LoopConfig(lr=3e-4, schedule="linear")
    assert [round(linear.lr_at(e, 3), 10) for e in (1, 2, 3)] == [3e-4, 2e-4, 1e-4]
    assert linear.lr_at(1, 1) == 3e-4
    assert [LoopConfig(lr=1e-3).lr_at(e, 5) for e in (1, 5)] == [1e-3, 1e-3]
    cosine = LoopConfig(lr=1e-3, schedule="cosine")
    assert cosine.lr_at(1, 10) == pytest.approx(3e-4) and cosine.lr_at(2, 10) > cosine.lr_at(9, 10) > 0
