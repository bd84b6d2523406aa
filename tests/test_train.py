"""mmlearn.train: the training loop alone, and the CLI under 2 gloo processes (torchrun's setup).

The distributed test starts 2 processes with the environment variables that
``torchrun`` sets and runs ``python -m mmlearn.train clip`` in each. With the
same *global* batch, 2 processes must train exactly what 1 process trains:
the rank-averaged training losses and the saved model equal a single-process
run (up to float32 summation order). It runs with ``--local-loss``, where
each rank's loss is only its share of the global loss, so the rank
averaging is what makes the numbers agree.
"""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from mmlearn import set_debug
from mmlearn.distill import accuracy
from mmlearn.distributed import gather_features
from mmlearn.losses import ClipLoss
from mmlearn.nn import make_small_clip
from mmlearn.optim import param_groups
from mmlearn.train import ShiftedDigits, main, train, train_on_indices, train_steps, warmup_cosine

# With the shift augmentation and the warm-up + cosine schedule: each rank shifts
# its samples exactly as the single process does, and the schedule steps alike.
CLI_ARGS = "clip --epochs 1 --batch-size 128 --seed 0 --shift 1 --schedule cosine --warmup 0.2"
# The key projections' biases add the same number to every score of a query,
# which the softmax ignores: their gradient is zero up to rounding, and AdamW
# turns that rounding noise into full-size steps of either sign.
ZERO_GRADIENT = ("self_attn.k_proj.bias",)


# ----------------------------------------------------------------------------------------
# One process
# ----------------------------------------------------------------------------------------


def _regression_loader(generator: torch.Generator) -> DataLoader:
    x = torch.randn(32, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=generator)


def test_train_returns_the_epoch_losses_and_eval_values(generator):
    model = nn.Linear(3, 1)
    loader = _regression_loader(generator)
    steps = []

    def compute_loss(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    history = train(
        model,
        loader,
        compute_loss,
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=3,
        eval_fn=lambda m: {"weight norm": m.weight.norm().item()},
        progress=False,
        after_step=lambda: steps.append(1),
    )
    assert len(history["loss"]) == len(history["weight norm"]) == 3
    assert history["loss"][-1] < history["loss"][0] / 4
    assert len(steps) == 3 * len(loader)
    assert all(isinstance(value, float) for value in history["loss"])


def test_train_clamps_the_logit_scale_after_every_step(generator):
    model = make_small_clip(vocab_size=10, max_length=4, num_layers=1)
    data = TensorDataset(torch.rand(8, 1, 8, 8), torch.randint(1, 10, (8, 4)))
    loader = DataLoader(data, batch_size=4)
    from mmlearn.losses import ClipLoss

    loss_fn = ClipLoss(learnable=False)
    seen = []

    def compute_loss(model, batch):
        seen.append(model.logit_scale.item())
        return loss_fn(*model(batch[0], batch[1]))

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 1.0)  # as if a step had pushed it over
    train(model, loader, compute_loss, optimizer, epochs=1, progress=False)
    assert seen[0] == pytest.approx(math.log(100) + 1.0)
    assert seen[1] == pytest.approx(math.log(100))  # clamped after the first step


def test_train_rejects_bad_epochs_and_empty_loaders():
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="epochs"):
        train(model, loader, lambda m, b: m(b[0]).sum(), optimizer, epochs=0)
    with pytest.raises(ValueError, match="at least one batch"):
        train(model, loader, lambda m, b: m(b[0]).sum(), optimizer, epochs=1)


# ----------------------------------------------------------------------------------------
# Two processes, as torchrun starts them
# ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun_environment(rank: int, world_size: int, port: int) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "CUDA_VISIBLE_DEVICES": "",
        }
    )


def _mismatched_batches(rank: int, port: int) -> str:
    """Each rank builds its loader with its own batch size; train() must refuse.

    Then, in debug mode, the feature gather itself refuses uneven ranks.
    """
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        previous = set_debug(True)
        try:
            gather_features(torch.zeros(2 + rank, 3))
            gathered = "no error"
        except ValueError as error:
            gathered = str(error)
        finally:
            set_debug(previous)
        data = TensorDataset(torch.zeros(24, 1))
        loader = DataLoader(
            data,
            batch_size=4 + rank,
            drop_last=True,
            sampler=DistributedSampler(data, shuffle=False),
        )
        model = nn.Linear(1, 1)
        try:
            train(
                model,
                loader,
                lambda m, b: m(b[0]).sum(),
                torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1,
                progress=False,
            )
        except ValueError as error:
            return str(error) + "\n" + gathered
        return "no error\n" + gathered
    finally:
        dist.destroy_process_group()


def _worker(rank: int, ports: tuple[int, int], folder: str) -> None:
    torch.set_num_threads(1)
    message = _mismatched_batches(rank, ports[1])
    (open(f"{folder}/mismatch{rank}.txt", "w")).write(message)
    _torchrun_environment(rank, 2, ports[0])
    main([*CLI_ARGS.split(), "--local-loss", "--out", f"{folder}/ddp"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("train")
    mp.start_processes(
        _worker,
        args=((_free_port(), _free_port()), str(folder)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    torch.set_num_threads(1)
    main([*CLI_ARGS.split(), "--supervised-ceiling", "--out", str(folder / "single")])
    return {
        "folder": folder,
        **{
            name: (
                json.loads((folder / name / "metrics.json").read_text()),
                load_file(folder / name / "model.safetensors"),
            )
            for name in ("single", "ddp")
        },
    }


@pytest.mark.distributed
def test_two_processes_train_what_one_process_trains(runs):
    single_metrics, single_model = runs["single"]
    ddp_metrics, ddp_model = runs["ddp"]
    assert ddp_metrics["world_size"] == 2 and single_metrics["world_size"] == 1
    assert ddp_metrics["local_loss"] is True
    # the rank-averaged loss of each epoch is the single-process loss
    torch.testing.assert_close(
        torch.tensor(ddp_metrics["train_loss"]),
        torch.tensor(single_metrics["train_loss"]),
        rtol=1e-4,
        atol=1e-5,
    )
    assert single_model.keys() == ddp_model.keys()
    for name, tensor in single_model.items():
        if name.endswith(ZERO_GRADIENT):
            continue
        torch.testing.assert_close(ddp_model[name], tensor, rtol=1e-3, atol=1e-4, msg=name)
    assert (
        abs(ddp_metrics["test_zero_shot_accuracy"] - single_metrics["test_zero_shot_accuracy"])
        <= 0.01
    )


@pytest.mark.distributed
def test_the_supervised_ceiling_is_recorded(runs):
    single_metrics, _ = runs["single"]
    assert 0.0 <= single_metrics["supervised_test_accuracy"] <= 1.0
    assert "supervised_test_accuracy" not in runs["ddp"][0]


@pytest.mark.distributed
def test_the_model_changed_during_training(runs):
    """Guards the test above: equal models must not be equal merely because nothing trained."""
    _, trained = runs["single"]
    torch.manual_seed(0)
    assert trained["logit_scale"] != pytest.approx(math.log(1 / 0.07))


@pytest.mark.distributed
def test_mismatched_local_batch_sizes_give_a_clear_error(runs):
    for rank in range(2):
        message = (runs["folder"] / f"mismatch{rank}.txt").read_text()
        assert "same local batch size" in message
        assert "[(4, 3), (5, 2)]" in message
        assert "got [2, 3] rows per rank" in message


# ----------------------------------------------------------------------------------------
# The CLI's augmentation and schedule
# ----------------------------------------------------------------------------------------


def test_shifted_digits_move_each_image_by_its_own_offset():
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ids, valid = torch.arange(5)[:, None], torch.ones(5, 1, dtype=torch.bool)
    data = ShiftedDigits(images, ids, valid, seed=3, max_shift=1)
    shifted, got_ids, _ = (torch.stack(x) for x in zip(*data.__getitems__([4, 0, 2]), strict=True))
    assert shifted.shape == (3, 1, 8, 8) and got_ids.flatten().tolist() == [4, 0, 2]
    for row, index in enumerate([4, 0, 2]):
        dy, dx = (int(v) - 1 for v in data.offsets[index])  # offsets 0..2 mean -1..+1
        padded = torch.nn.functional.pad(images[index, 0], (1, 1, 1, 1))
        expected = padded[1 + dy : 9 + dy, 1 + dx : 9 + dx]
        torch.testing.assert_close(shifted[row, 0], expected)
    # the same (seed, epoch, index) gives the same shift; another epoch redraws
    again = ShiftedDigits(images, ids, valid, seed=3, max_shift=1)
    torch.testing.assert_close(again.offsets, data.offsets)
    offsets = data.offsets.clone()
    data.set_epoch(1)
    assert not torch.equal(offsets, data.offsets)
    torch.testing.assert_close(data[2][0], data.__getitems__([2])[0][0])


def test_warmup_cosine_schedule():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = warmup_cosine(optimizer, total_steps=10, warmup=0.2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([1.0, 2.0, 2.0])  # warm-up over 2 steps, then the peak
    assert rates[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False))
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(optimizer, 10, warmup=1.0)


def _blobs(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two well separated Gaussian blobs in 2-D, labels 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])[labels]
    return centres + 0.5 * torch.randn(n, 2, generator=generator), labels


def _classifier_loss(inputs: torch.Tensor, labels: torch.Tensor):
    def batch_loss(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs[index]), labels[index])

    return batch_loss


def test_train_on_indices_learns_a_separable_problem():
    inputs, labels = _blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    before = accuracy(model, inputs, labels)
    history = train_on_indices(
        model, len(labels), _classifier_loss(inputs, labels), epochs=5, batch_size=32, lr=3e-2
    )
    assert len(history["loss"]) == 5
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert accuracy(model, inputs, labels) >= 0.97 > before


def test_train_on_indices_sees_every_index_once_per_epoch_on_the_models_device():
    seen: list[torch.Tensor] = []
    model = nn.Linear(1, 1)

    def batch_loss(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        assert index.dtype == torch.long and index.device == model.weight.device
        seen.append(index)
        return model(index.float().unsqueeze(1)).pow(2).mean()

    train_on_indices(model, 10, batch_loss, epochs=2, batch_size=4, lr=1e-3)
    assert [len(index) for index in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (torch.cat(seen[:3]), torch.cat(seen[3:])):
        assert sorted(epoch.tolist()) == list(range(10))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))  # reshuffled
    seen.clear()
    train_on_indices(model, 10, batch_loss, epochs=1, batch_size=4, lr=1e-3, drop_last=True)
    assert [len(index) for index in seen] == [4, 4]


def test_train_on_indices_is_seeded_and_leaves_frozen_parameters_alone():
    inputs, labels = _blobs()

    def run(seed: int) -> nn.Sequential:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
        model[0].requires_grad_(False)
        frozen = model[0].weight.detach().clone()
        train_on_indices(
            model,
            len(labels),
            _classifier_loss(inputs, labels),
            epochs=1,
            batch_size=16,
            lr=1e-2,
            seed=seed,
        )
        assert torch.equal(model[0].weight, frozen)
        return model

    same, again, other = run(0), run(0), run(1)
    assert torch.equal(same[2].weight, again[2].weight)
    assert not torch.equal(same[2].weight, other[2].weight)


def test_train_on_indices_clamps_the_logit_scale():
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 1.0)
    images, ids = torch.rand(16, 1, 8, 8), torch.randint(1, 12, (16, 5))
    loss_fn = ClipLoss(learnable=False)

    def batch_loss(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        return loss_fn(*model(images[index], ids[index]))

    train_on_indices(model, 16, batch_loss, epochs=1, batch_size=8, lr=1e-6)
    assert model.logit_scale.item() == pytest.approx(math.log(100))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 20, "drop_last": True}, "at least one batch"),
    ],
)
def test_train_on_indices_bad_inputs(kwargs, match):
    arguments = {"num_samples": 10, "epochs": 1, "batch_size": 4, "lr": 1e-3, **kwargs}
    model = nn.Linear(1, 1)
    with pytest.raises(ValueError, match=match):
        train_on_indices(model, batch_loss=lambda m, i: m.weight.sum(), **arguments)


def test_train_steps_draws_with_replacement_from_its_seed_and_learns():
    inputs, labels = _blobs()
    drawn: list[torch.Tensor] = []
    loss_of = _classifier_loss(inputs, labels)

    def batch_loss(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        drawn.append(index)
        return loss_of(model, index)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-2)
    global_state = torch.get_rng_state()
    history = train_steps(
        model, len(labels), batch_loss, optimizer, steps=60, batch_size=16, seed=3
    )
    assert torch.equal(torch.get_rng_state(), global_state)  # left to the model's dropout
    assert len(drawn) == 60 and len(history["loss"]) == 1
    expected = torch.Generator().manual_seed(3)
    for index in drawn:  # the documented recipe, draw by draw
        assert index.dtype == torch.long
        assert torch.equal(index, torch.randint(len(labels), (16,), generator=expected))
    assert model.training
    assert (
        history["loss"][0]
        < loss_of(
            nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)), torch.arange(200)
        ).item()
    )
    assert accuracy(model, inputs, labels) >= 0.97


def test_step_losses_match_a_hand_written_loop():
    """history["step_loss"] is the loss of every step, in order, as a plain loop computes
    it; history["loss"] is their mean."""
    inputs, labels = _blobs()
    loss_of = _classifier_loss(inputs, labels)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    model, optimizer = fresh()
    history = train_steps(model, len(labels), loss_of, optimizer, steps=12, batch_size=8, seed=5)
    model, optimizer = fresh()
    generator, expected = torch.Generator().manual_seed(5), []
    for _ in range(12):
        loss = loss_of(model, torch.randint(len(labels), (8,), generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected.append(loss.item())
    assert history["step_loss"] == pytest.approx(expected, rel=1e-6)
    assert history["loss"][0] == pytest.approx(sum(expected) / 12, rel=1e-6)
    assert len(set(history["step_loss"])) > 1  # the loss changes from step to step


def test_train_steps_calls_after_step_once_per_step_after_the_update():
    inputs, labels = _blobs()
    loss_of = _classifier_loss(inputs, labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[torch.Tensor] = []
    history = train_steps(
        model,
        len(labels),
        loss_of,
        optimizer,
        steps=5,
        batch_size=8,
        after_step=lambda: seen.append(model[0].weight.detach().clone()),
    )
    assert len(seen) == 5 and len(history["step_loss"]) == 5
    assert all(not torch.equal(a, b) for a, b in zip(seen, seen[1:], strict=False))
    assert torch.equal(seen[-1], model[0].weight)  # called after the last update


def test_train_steps_clamps_and_schedules():
    model = make_small_clip(vocab_size=12, max_length=5, num_layers=1)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100) + 1.0)
    images, ids = torch.rand(16, 1, 8, 8), torch.randint(1, 12, (16, 5))
    loss_fn = ClipLoss(learnable=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    train_steps(
        model,
        16,
        lambda m, i: loss_fn(*m(images[i], ids[i])) * 0.0,
        optimizer,
        steps=3,
        batch_size=4,
        scheduler=scheduler,
    )
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.125)


@pytest.mark.parametrize("name", ["num_samples", "steps", "batch_size"])
def test_train_steps_bad_inputs(name):
    arguments = {"num_samples": 4, "steps": 2, "batch_size": 2, name: 0}
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=name):
        train_steps(model, batch_loss=lambda m, i: m.weight.sum(), optimizer=optimizer, **arguments)
