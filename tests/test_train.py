"""The training loop on a tiny Fashion-MNIST written here: results, resume, freezing, warm-up."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch

from attn2d.cli import main
from attn2d.models import create_model
from attn2d.train import (
    TrainConfig,
    _AttentionWarmup,
    load_model,
    read_checkpoint,
    top_level_mechanisms,
    train,
)

from .test_data import write_fashion_mnist


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root / "FashionMNIST" / "raw", n_train=128, n_test=64, compressed=False)
    return str(root)


def tiny(data_dir: str, out, **changes) -> TrainConfig:
    config = TrainConfig(model="small_cnn", attention="se", dataset="fashion-mnist",
                         data_dir=data_dir, epochs=1, batch_size=32, out=str(out),
                         progress=False)
    return dataclasses.replace(config, **changes)


def test_one_epoch_writes_metrics_checkpoints_and_result(data_dir, tmp_path):
    code = main(["train", "--data-dir", data_dir, "--attention", "se", "--epochs", "1",
                 "--batch-size", "32", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "finished"
    assert result["params"] == result["trainable_params"] > 0
    assert result["macs"] > 0 and result["latency_ms_per_batch"] > 0
    assert result["peak_memory_mb"] > 0 and 0 <= result["last_test_acc"] <= 1
    assert result["config"]["in_channels"] == 1 and result["config"]["attention"] == "se"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["images_per_s"] > 0
    model, config = load_model(tmp_path / "last.pt")
    assert config["model"] == "small_cnn" and not model.training
    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    x = torch.randn(2, 1, 28, 28)
    reference = create_model("small_cnn", attention="se", in_channels=1).eval()
    reference.load_state_dict(checkpoint["model"])
    torch.testing.assert_close(model(x), reference(x))


def test_training_learns_the_tiny_task(data_dir, tmp_path):
    result = train(tiny(data_dir, tmp_path, attention=None, epochs=4, lr=0.05))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result["last_test_acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("stop_at", [(0, 4), (1, 2)], ids=["epoch-boundary", "mid-epoch"])
def test_interrupted_then_resumed_equals_uninterrupted(data_dir, tmp_path, stop_at):
    config = tiny(data_dir, tmp_path / "straight", epochs=2, label_smoothing=0.1)
    train(config)

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == stop_at:
            signal.raise_signal(signal.SIGTERM)  # the real path: handler, flag, save

    split = dataclasses.replace(config, out=str(tmp_path / "split"))
    first = train(split, on_step=interrupt)
    assert first["status"] == "interrupted"
    assert not (tmp_path / "split" / "result.json").exists()
    assert read_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == stop_at[0] + (
        stop_at[1] == 4)
    train(dataclasses.replace(split, resume=True))
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(data_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"expected an attn2d checkpoint.*unreadable"):
        read_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match=r"expected an attn2d checkpoint.*state_dict"):
        load_model(foreign)
    run = tmp_path / "run"
    train(tiny(data_dir, run))
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with pytest.raises(ValueError, match="unreadable"):
        train(tiny(data_dir, run, resume=True))
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


def test_resume_refuses_changed_settings_and_fresh_run_refuses_old_checkpoint(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path))
    with pytest.raises(ValueError, match="pass --resume"):
        train(tiny(data_dir, tmp_path))
    with pytest.raises(ValueError, match="lr"):
        train(tiny(data_dir, tmp_path, resume=True, lr=0.5))


def test_attention_warmup_starts_as_the_backbone_without_attention():
    torch.manual_seed(1)
    baseline = create_model("small_cnn", in_channels=1).eval()
    model = create_model("small_cnn", attention="se", in_channels=1).eval()
    missing, unexpected = model.load_state_dict(baseline.state_dict(), strict=False)
    assert missing and not unexpected
    warmup = _AttentionWarmup(model, epochs=4)
    x = torch.randn(3, 1, 28, 28)
    assert warmup.set_epoch(0) == 0.0
    torch.testing.assert_close(model(x), baseline(x))
    assert warmup.set_epoch(4) == 1.0
    with_attention = model(x)
    assert not torch.allclose(with_attention, baseline(x))
    warmup.set_epoch(1)
    _, module = top_level_mechanisms(model)[0]
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    model(x)
    handle.remove()
    warmup.remove()
    # The hook registered by the warm-up ran first: "out" is already the blend.
    raw = module(seen["inp"])
    torch.testing.assert_close(seen["out"], 0.25 * raw + 0.75 * seen["inp"])
    torch.testing.assert_close(model(x), with_attention)


def test_attention_warmup_alpha_is_logged_per_epoch(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path, epochs=3, attention_warmup=2))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["attention_alpha"] for r in rows] == [0.0, 0.5, 1.0]


def test_freeze_backbone_trains_only_attention_and_head(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "base", attention=None))
    base = read_checkpoint(tmp_path / "base" / "last.pt")["model"]
    result = train(tiny(data_dir, tmp_path / "frozen", freeze_backbone=True,
                        init_from=str(tmp_path / "base" / "last.pt")))
    tuned = read_checkpoint(tmp_path / "frozen" / "last.pt")["model"]
    model = create_model("small_cnn", attention="se", in_channels=1)
    attention = tuple(f"{name}." for name, _ in top_level_mechanisms(model))
    assert all(k.startswith(attention) for k in set(tuned) - set(base))
    head = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and not n.startswith(attention)][-1]
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    # Only the classifier moved: backbone weights and BatchNorm statistics are untouched.
    assert changed and all(k.startswith(f"{head}.") for k in changed)
    assert result["trainable_params"] < result["params"]


def test_init_from_a_different_model_is_refused(data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "se"))
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny(data_dir, tmp_path / "eca", attention=None,
                   init_from=str(tmp_path / "se" / "last.pt")))
    with pytest.raises(ValueError, match="--init-from"):
        TrainConfig(freeze_backbone=True).check()
