"""The training loop on a tiny Fashion-MNIST written here: results, resume, freezing,
warm-up, precise BN, validation split, predictions, failure modes."""

from __future__ import annotations

import dataclasses
import json
import math
import signal

import numpy as np
import pytest
import torch

from attn2d import Attn2dError
from attn2d.cli import main
from attn2d.data import DataSpec, load_data
from attn2d.models import attention_modules, create_model
from attn2d.training import (
    AttentionWarmup,
    NonFiniteLoss,
    TrainConfig,
    load_model,
    recompute_batch_norm,
    start,
    train,
)
from attn2d.training.checkpoint import read_checkpoint

from ..datasets import write_fashion_mnist


@pytest.fixture(scope="module")
def data_dir(fake_fashion_mnist):
    return fake_fashion_mnist(128, 64)


def tiny(data_dir: str, out, **changes) -> TrainConfig:
    config = TrainConfig(model="small_cnn", attention="se", dataset="fashion-mnist",
                         data_dir=data_dir, epochs=1, batch_size=32, out=str(out),
                         progress=False)
    return dataclasses.replace(config, **changes)


def accuracy_of(path, data_dir: str) -> float:
    """Test accuracy of a checkpoint's model, evaluated here from scratch."""
    model, config = load_model(path)
    data = load_data(DataSpec(config["dataset"], data_dir=data_dir), torch.device("cpu"), 0)
    correct = 0
    with torch.no_grad():
        for x, y, index in data.test.batches(16):
            correct += int(((model(x).argmax(1) == y) & (index >= 0)).sum())
    return correct / len(data.test)


def test_one_epoch_writes_metrics_checkpoints_predictions_and_result(data_dir, tmp_path):
    code = main(["train", "--data-dir", data_dir, "--attention", "se", "--epochs", "1",
                 "--batch-size", "32", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "finished" and result["selection"] == "final epoch"
    assert result["params"] == result["trainable_params"] > 0 and result["macs"] > 0
    assert 0 <= result["test_acc"] <= 1 and result["compile_time_s"] == 0
    assert result["config"]["in_channels"] == 1 and result["config"]["attention"] == "se"
    assert result["config"]["dataset"] == "fashion-mnist" and result["config"]["lr"] == 0.05
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["images_per_s"] > 0
    model, config = load_model(tmp_path / "last.pt")
    assert config["model"] == "small_cnn" and not model.training
    saved = np.load(tmp_path / "predictions.npz")
    assert saved["predictions"].shape == saved["targets"].shape == (64,)
    # The stored predictions are those of the reported model, image by image.
    data = load_data(DataSpec("fashion-mnist", data_dir=data_dir), torch.device("cpu"), 0)
    x = torch.cat([x for x, _, _ in data.test.batches(64)])
    with torch.no_grad():
        predicted = load_model(tmp_path / "best.pt")[0](x).argmax(1)
    assert np.array_equal(predicted.numpy(), saved["predictions"])
    assert (saved["predictions"] == saved["targets"]).mean() == pytest.approx(result["test_acc"])


def test_training_learns_the_tiny_task(data_dir, tmp_path):
    result = train(tiny(data_dir, tmp_path, attention=None, epochs=4, lr=0.05))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result["test_acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("stop_at", [(0, 4), (1, 2)], ids=["epoch-boundary", "mid-epoch"])
def test_interrupted_then_resumed_equals_uninterrupted(data_dir, tmp_path, stop_at):
    config = tiny(data_dir, tmp_path / "straight", epochs=2, label_smoothing=0.1,
                  attention_warmup=1.5)
    train(config)

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == stop_at:
            signal.raise_signal(signal.SIGTERM)  # the real path: handler, flag, save

    split = dataclasses.replace(config, out=str(tmp_path / "split"))
    first = train(split, on_step=interrupt)
    assert first["status"] == "interrupted"
    assert not (tmp_path / "split" / "result.json").exists()
    saved = read_checkpoint(tmp_path / "split" / "last.pt")
    assert (saved["epoch"], saved["step"]) == ((1, 0) if stop_at[1] == 4 else stop_at)
    train(dataclasses.replace(split, resume=True))
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_a_finished_run_says_so_and_can_be_extended(data_dir, tmp_path, caplog):
    first = train(tiny(data_dir, tmp_path))
    with caplog.at_level("INFO", logger="attn2d"):
        again = train(tiny(data_dir, tmp_path, resume=True))
    assert again.to_dict() == json.loads((tmp_path / "result.json").read_text()) \
        == first.to_dict()
    assert "is finished" in caplog.text
    with pytest.raises(Attn2dError, match=r"finished run .*\(attention: 'se' -> 'cbam'\)"):
        train(tiny(data_dir, tmp_path, resume=True, attention="cbam"))
    longer = train(tiny(data_dir, tmp_path, resume=True, epochs=3))
    assert longer["config"]["epochs"] == 3 and longer["test_epoch"] == 3
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in rows] == [1, 2, 3]


def test_resume_refuses_changed_settings_a_missing_run_and_an_old_checkpoint(data_dir, tmp_path):
    with pytest.raises(ValueError, match="expected a run to resume in --out"):
        train(tiny(data_dir, tmp_path / "nothing", resume=True))
    train(tiny(data_dir, tmp_path))
    with pytest.raises(ValueError, match="pass --resume"):
        train(tiny(data_dir, tmp_path))
    with pytest.raises(ValueError, match=r"lr: 0\.05 -> 0\.5"):
        train(tiny(data_dir, tmp_path, resume=True, lr=0.5, epochs=2))
    with pytest.raises(ValueError, match="only --epochs may grow"):
        (tmp_path / "result.json").unlink()
        train(tiny(data_dir, tmp_path, resume=True, epochs=1, batch_size=16))


def test_dataset_aliases_resume_as_the_same_run(data_dir, tmp_path):
    def stop(epoch: int, step: int) -> None:
        if step == 2:
            signal.raise_signal(signal.SIGTERM)

    train(tiny(data_dir, tmp_path, dataset="FashionMNIST", epochs=2), on_step=stop)
    result = train(tiny(data_dir, tmp_path, dataset="fmnist", epochs=2, resume=True))
    assert result["status"] == "finished" and result["config"]["dataset"] == "fashion-mnist"


def test_corrupt_empty_or_foreign_checkpoints_give_one_clear_error(data_dir, tmp_path):
    for name, content in (("empty.pt", b""), ("random.pt", bytes(range(256)) * 4),
                          ("text.pt", b"not a checkpoint at all")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=r"expected an attn2d checkpoint .*(empty|unread)"):
            load_model(tmp_path / name)
    foreign = tmp_path / "foreign.pt"
    torch.save({"epoch": 3, "note": "x"}, foreign)
    with pytest.raises(ValueError, match=r"expected an attn2d checkpoint.*'epoch'"):
        load_model(foreign)
    run = tmp_path / "run"
    train(tiny(data_dir, run))
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    (run / "result.json").unlink()
    with pytest.raises(ValueError, match="unreadable"):
        train(tiny(data_dir, run, resume=True))
    with pytest.raises(Attn2dError, match="got no file"):
        read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": math.nan}, r"--lr to be finite and > 0, got nan"),
    ({"lr": math.inf}, r"--lr to be finite and > 0, got inf"),
    ({"lr": -0.1}, r"--lr to be finite and > 0"),
    ({"momentum": 1.0}, r"--momentum to be finite and in \[0, 1\)"),
    ({"warmup_epochs": 3.0}, r"--warmup-epochs to be finite and between 0 and --epochs"),
    ({"attention_warmup": 2}, r"--attention-warmup to be finite and between 0 and --epochs"),
    ({"threads": 0}, r"--threads >= 1, got 0"),
    ({"epochs": 0}, r"--epochs >= 1, got 0"),
    ({"epochs": 1.5}, r"--epochs to be an integer >= 1, got 1.5"),
    ({"compile": "fast"}, r"--compile to be one of none, default"),
    ({"attention": "cbam(reduction=8, reduction=4)"}, r"'reduction' twice"),
    ({"model": "resnet99"}, r"--model to be one of resnet18, .*, got 'resnet99'"),
    ({"freeze_backbone": True}, r"--init-from"),
])
def test_bad_numbers_and_choices_are_refused_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(epochs=1), **change).resolved().check()


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
        data_dir, tmp_path):
    holder = {}

    def poison(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:  # as a diverging learning rate would
            with torch.no_grad():
                holder["run"].net.fc.weight.fill_(math.nan)

    config = tiny(data_dir, tmp_path, epochs=2)
    run = start(config)
    holder["run"] = run
    from attn2d.training import StopRequest, end_epoch, train_one_epoch

    with StopRequest().installed() as stop:
        train_one_epoch(run, 0, stop)
        end_epoch(run, 0)
        train_one_epoch(run, 1, stop, poison)
        with pytest.raises(NonFiniteLoss, match=r"expected a finite training loss, got nan in "
                                                r"epoch 2.*last\.pt \(epoch 1\) is kept"):
            end_epoch(run, 1)
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not (tmp_path / "result.json").exists()


def test_attention_warmup_starts_as_the_backbone_and_blends_linearly():
    torch.manual_seed(1)
    baseline = create_model("small_cnn", in_channels=1).eval()
    model = create_model("small_cnn", attention="se", in_channels=1).eval()
    model.load_state_dict(baseline.state_dict(), strict=False)
    warmup = AttentionWarmup(model)
    x = torch.randn(3, 1, 28, 28)
    warmup.set(0.0)
    torch.testing.assert_close(model(x), baseline(x))
    warmup.set(1.0)
    with_attention = model(x)
    assert not torch.allclose(with_attention, baseline(x))
    warmup.set(0.25)
    _, module = attention_modules(model)[0]
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    model(x)
    handle.remove()
    warmup.remove()
    raw = module(seen["inp"])  # the warm-up's hook ran first: "out" is already the blend
    torch.testing.assert_close(seen["out"], 0.25 * raw + 0.75 * seen["inp"])
    torch.testing.assert_close(model(x), with_attention)


def test_attention_warmup_ramps_per_step_and_the_saved_model_is_the_evaluated_one(
        data_dir, tmp_path):
    def stop_after_first_epoch(epoch: int, step: int) -> None:
        if (epoch, step) == (0, 4):
            signal.raise_signal(signal.SIGTERM)

    config = tiny(data_dir, tmp_path, epochs=3, attention_warmup=2)
    train(config, on_step=stop_after_first_epoch)
    saved = read_checkpoint(tmp_path / "last.pt")
    assert saved["attention_alpha"] == 0.5  # 4 of 8 warm-up steps, rising every step
    reported = saved["history"][-1]["test_acc"]
    assert accuracy_of(tmp_path / "last.pt", data_dir) == reported
    result = train(dataclasses.replace(config, resume=True))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["attention_alpha"] for r in rows] == [0.5, 1.0, 1.0]
    assert accuracy_of(tmp_path / "best.pt", data_dir) == result["test_acc"]


def test_freeze_backbone_starts_as_the_baseline_and_trains_only_attention_and_head(
        data_dir, tmp_path):
    train(tiny(data_dir, tmp_path / "base", attention=None, epochs=2))
    base = read_checkpoint(tmp_path / "base" / "last.pt")["model"]
    config = tiny(data_dir, tmp_path / "frozen", freeze_backbone=True,
                  init_from=str(tmp_path / "base" / "last.pt"))
    run = start(config)
    assert run.config.gate_init == "identity"
    run.net.eval()
    assert accuracy_of(tmp_path / "base" / "last.pt", data_dir) == pytest.approx(
        _evaluate(run))
    result = train(config)
    tuned = read_checkpoint(tmp_path / "frozen" / "last.pt")["model"]
    added = set(tuned) - set(base)
    assert added and all(".attn." in k for k in added)
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    # Only the classifier moved: backbone weights and BatchNorm statistics are untouched.
    assert changed == {"fc.weight", "fc.bias"}
    assert result["trainable_params"] < result["params"]
    assert result["config"]["gate_init"] == "identity"


def _evaluate(run) -> float:
    from attn2d.training import evaluate

    return evaluate(run, run.data.test).accuracy


def test_init_from_a_plain_state_dict_and_a_mismatch(data_dir, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(create_model("small_cnn", in_channels=1).state_dict(), plain)
    result = train(tiny(data_dir, tmp_path / "se", init_from=str(plain)))
    assert result["status"] == "finished"
    torch.save(create_model("small_cnn", in_channels=3).state_dict(), plain)
    with pytest.raises(ValueError, match=r"--init-from .*block1\.conv\.weight"):
        train(tiny(data_dir, tmp_path / "bad", init_from=str(plain)))


def test_precise_bn_changes_only_running_statistics(data_dir, tmp_path):
    run = start(tiny(data_dir, tmp_path, attention="cbam"))
    before = {k: v.clone() for k, v in run.net.state_dict().items()}
    recompute_batch_norm(run, 0, 3)
    after = run.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                           for k in changed)
    # Exactly the plain average of 3 batches' statistics (momentum None), per layer.
    bn = run.net.block1.bn
    xs = [x for _, (x, _) in zip(range(3), run.data.train.batches(0, 32), strict=False)]
    with torch.no_grad():
        feats = [run.net.block1.conv(x) for x in xs]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean((0, 2, 3)) for f in feats])
                               .mean(0))


def test_precise_bn_brings_eval_accuracy_to_the_batch_statistics_accuracy(tmp_path):
    """500 images, 2 epochs of CBAM: the running statistics lag the weights (the issue saw
    10 % in eval mode against 47 % with batch statistics); recomputed ones do not."""
    root = tmp_path / "data"
    write_fashion_mnist(root / "FashionMNIST" / "raw", n_train=512, n_test=256,
                        compressed=False)
    runs = {}
    for precise in (0, 16):
        config = tiny(str(root), tmp_path / f"p{precise}", attention="cbam", epochs=2,
                      batch_size=32, lr=0.2, precise_bn=precise)
        train(config)
        model, _ = load_model(tmp_path / f"p{precise}" / "last.pt")
        data = load_data(DataSpec("fashion-mnist", data_dir=str(root)), torch.device("cpu"), 0)
        x, y = (torch.cat(t) for t in zip(*[(x, y) for x, y, _ in data.test.batches(256)],
                                           strict=True))
        with torch.no_grad():
            eval_acc = float((model(x).argmax(1) == y).float().mean())
            batch_acc = float((model.train()(x).argmax(1) == y).float().mean())
        runs[precise] = (eval_acc, batch_acc)
    eval_acc, batch_acc = runs[16]
    assert abs(eval_acc - batch_acc) < 0.05, runs


def test_validation_split_selects_the_reported_epoch(data_dir, tmp_path):
    result = train(tiny(data_dir, tmp_path, epochs=3, val_split=32))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
    assert result["selection"] == "best validation accuracy"
    assert result["test_epoch"] == best["epoch"] and result["test_acc"] == best["test_acc"]
    assert result["config"]["train_images"] == 128 - 32
    assert accuracy_of(tmp_path / "best.pt", data_dir) == result["test_acc"]


def test_bad_out_and_device_are_refused_in_one_line(data_dir, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    base = ["train", "--data-dir", data_dir, "--epochs", "1", "--no-progress"]
    for out, message in ((afile, "expected --out to be a folder, got the file"),
                         (afile / "sub", "to be creatable, got the file")):
        assert main([*base, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as a read-only mount would
    assert main([*base, "--out", str(tmp_path / "ro")]) == 2
    assert "to be writable, got no write permission" in capsys.readouterr().err
    monkeypatch.undo()
    for device, message in (("tpu", "expected --device auto, cpu, cuda or cuda:N, got 'tpu'"),
                            ("cuda", "expected --device cpu (no CUDA GPU")):
        if device == "cuda" and torch.cuda.is_available():
            continue
        assert main([*base, "--device", device, "--out", str(tmp_path / "d")]) == 2
        assert message in capsys.readouterr().err


def test_config_file_command_line_and_defaults_in_that_order(data_dir, tmp_path):
    config = tmp_path / "my.json"
    config.write_text(json.dumps({"data_dir": data_dir, "epochs": 3, "batch_size": 32,
                                  "attention": "eca", "out": str(tmp_path / "from-file"),
                                  "progress": False}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "cli"),
                 "--epochs", "1"]) == 0
    saved = json.loads((tmp_path / "cli" / "result.json").read_text())["config"]
    assert saved["epochs"] == 1 and saved["attention"] == "eca" and saved["batch_size"] == 32
    assert saved["momentum"] == TrainConfig().momentum  # neither file nor command line
    assert not (tmp_path / "from-file").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("3", "to hold a JSON object of settings, got a JSON int"),
    ("[1, 2]", "got a JSON list"),
    ('[{"epochs": 1}]', "got a JSON list"),
    ('{"epochs": 1,\n "lr": }', "got invalid JSON at line 2, column 8"),
    ('{"epoch": 1}', "got unknown keys ['epoch']"),
])
def test_bad_config_files_are_named_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "c.json" in err


def test_legal_but_suspicious_settings_warn(data_dir, tmp_path, capsys):
    train(tiny(data_dir, tmp_path, amp="fp16", threads=64, attention_warmup=1))
    err = capsys.readouterr().err
    assert "--amp fp16 on a CPU is emulated" in err
    assert "--threads 64 exceeds" in err
    assert "warm-up as long as the whole run" in err


def test_tensorboard_events_hold_scalars_maps_and_histograms(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny(data_dir, tmp_path, attention="cbam", epochs=2, tensorboard=True,
               tensorboard_every=2))
    events = EventAccumulator(str(tmp_path / "tensorboard"),
                              size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("accuracy/test")] == [1, 2]
    assert events.Scalars("loss/train")[0].value > 0
    assert any(t.startswith("attention/block1.attn.spatial_gate") for t in tags["images"])
    assert "weights/fc.weight" in tags["histograms"]
    image_steps = {e.step for t in tags["images"] for e in events.Images(t)}
    assert image_steps == {2}  # every 2 epochs


@pytest.mark.slow
def test_compiled_steps_match_eager_and_time_compilation_apart(data_dir, tmp_path, capsys):
    eager = train(tiny(data_dir, tmp_path / "eager", epochs=2))
    compiled = train(tiny(data_dir, tmp_path / "compiled", epochs=2,
                          compile="reduce-overhead"))
    assert "CUDA graphs, which need a GPU" in capsys.readouterr().err
    assert compiled["compile_time_s"] > 0
    assert compiled["time_per_epoch_s"] < compiled["compile_time_s"]
    a = json.loads((tmp_path / "eager" / "metrics.jsonl").read_text().splitlines()[-1])
    b = json.loads((tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()[-1])
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    assert abs(compiled["test_acc"] - eager["test_acc"]) <= 2 / 64


def test_an_image_folder_trains_and_its_checkpoint_is_pictured_with_the_run_options(tmp_path):
    from ..datasets import write_folder

    write_folder(tmp_path / "pets", per_class=(8, 4), size=12)
    result = train(TrainConfig(dataset=f"folder:{tmp_path / 'pets'}", attention="cbam",
                               epochs=1, batch_size=8, image_size=8, out=str(tmp_path / "run"),
                               progress=False))
    config = result["config"]
    assert config["num_classes"] == 3 and config["input_size"] == 8
    assert len(config["normalization"]["mean"]) == 3  # computed from the training images
    assert main(["visualize", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--sample",
                 "0", "--pictures", "spatial", "--out", str(tmp_path / "pictures")]) == 0
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 3  # one per CBAM block


def test_a_checkpoint_of_attn2d_0_1_loads_and_resumes_bit_identically(fake_fashion_mnist,
                                                                       tmp_path):
    """last.pt written by attn2d 0.1 (before the layout move; tests/training/data) when its
    2-epoch run was stopped in epoch 2, after step 2: it loads, and resuming it here ends
    with the weights, bit for bit, of a run trained here without interruption."""
    import shutil
    from pathlib import Path

    saved = Path(__file__).parent / "data" / "attn2d-0.1-small_cnn-se-seed3-stopped.pt"
    model, config = load_model(saved)
    assert config["attention"] == "se" and config["epochs"] == 2 and not model.training
    assert (read_checkpoint(saved)["epoch"], read_checkpoint(saved)["step"]) == (1, 2)
    data_dir = fake_fashion_mnist(128, 64)  # the same images the old run saw
    (tmp_path / "old").mkdir()
    shutil.copy(saved, tmp_path / "old" / "last.pt")
    settings = dict(epochs=2, seed=3)
    resumed = train(tiny(data_dir, tmp_path / "old", resume=True, **settings))
    straight = train(tiny(data_dir, tmp_path / "new", **settings))
    a = read_checkpoint(tmp_path / "old" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "new" / "last.pt")["model"]
    assert resumed.test_acc == straight.test_acc
    for key in a:
        assert torch.equal(a[key], b[key]), key
