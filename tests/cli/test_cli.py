"""The command line: every command, good and bad arguments, help, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attn2d.cli import main
from attn2d.modules.registry import available

from ..datasets import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


def test_list_shows_every_mechanism_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for m in available():
        assert f"\n{m.name} " in out
    assert "580" in out  # SE at C=64: 2·64·4 + 4 + 64


def test_list_one_mechanism_shows_its_keywords_and_defaults(capsys):
    assert main(["list", "cbam"]) == 0
    out = capsys.readouterr().out
    assert "reduction" in out and "spatial_kernel" in out and "7" in out
    assert main(["list", "rcca", "--format", "json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert {"keyword": "recurrence", "default": 2, "type": "int"} in data["keywords"]


def test_list_as_markdown_and_json(capsys):
    import json

    assert main(["list", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| name | family |")
    assert main(["list", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(available())


def test_shapes_runs_the_given_specs(capsys):
    assert main(["shapes", "se", "cbam(reduction=8)", "--input", "2x32x8x8"]) == 0
    out = capsys.readouterr().out
    assert "(2, 32, 8, 8) -> (2, 32, 8, 8)" in out


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["compare", "--help"],
                                  ["report", "--help"], ["visualize", "--help"]])
def test_help_exits_cleanly_and_shows_every_default(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    if argv[0] in ("train", "compare"):
        for option in ("--epochs", "--lr", "--compile", "--precise-bn", "--dataset"):
            block = out[out.index(f"\n  {option}") + 1:]
            assert "(default:" in block[: block.index("\n  --")], option
        assert out.index("\nmodel:") < out.index("\n  --placement") < out.index("\noptimisation:")


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "attn2d", "list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "criss-cross" in done.stdout


def test_a_closed_pipe_is_not_an_error():
    command = [sys.executable, "-m", "attn2d", "trace", "resnet18", "--input", "3x32x32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"module")
    process.stdout.close()  # as `| head -1` does
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == b""


def test_internal_errors_keep_their_traceback(monkeypatch):
    import attn2d.cli.shapes as shapes

    def broken(args):
        return len(None)  # a bug, not a user error

    monkeypatch.setattr(shapes, "run", broken)
    with pytest.raises(TypeError, match="has no len"):
        main(["shapes", "se"])

    def plain_value_error(args):
        raise ValueError("expected a thing")  # worded like a user error, but not Attn2dError

    monkeypatch.setattr(shapes, "run", plain_value_error)
    with pytest.raises(ValueError, match="expected a thing"):
        main(["shapes", "se"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    write_fashion_mnist(root / "data" / "FashionMNIST" / "raw", n_train=64, n_test=32,
                        compressed=False)
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(bytes(range(256)))
    (root / "a_file").write_text("x")
    (root / "empty_dir").mkdir()
    (root / "bad.json").write_text("[1, 2]")
    return root


# (argv, what the last line of stderr must contain); {r} is the folder of `files`.
BAD = [
    (["list", "sqeeze"], "unknown mechanism 'sqeeze'"),
    (["list", "--channels", "0"], "channels"),
    (["shapes", "--input", "2x64"], "--input"),
    (["shapes", "cbam(reduction=8, reduction=4)"], "'reduction' twice"),
    (["params", "--model", "resnet99"], "resnet99"),
    (["params", "--input", "3xa"], "--input"),
    (["profile", "nope"], "nope"),
    (["profile", "small_cnn", "--depth", "-1"], "depth"),
    (["profile", "se", "--input", "3x8"], "--input"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--momentum", "1"], "--momentum"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "2", "--warmup-epochs", "3"], "--warmup-epochs"),
    (["train", "--threads", "0"], "--threads"),
    (["train", "--batch-size", "abc"], "--batch-size"),
    (["train", "--compile", "fast"], "--compile"),
    (["train", "--dataset", "mnist"], "mnist"),
    (["train", "--device", "tpu"], "--device"),
    (["train", "--out", "{r}/a_file"], "--out"),
    (["train", "--out", "{r}/a_file/run"], "--out"),
    (["train", "--config", "{r}/missing.json"], "--config"),
    (["train", "--config", "{r}/bad.json"], "--config"),
    (["train", "--attention", "cbam(reduction=8, reduction=4)"], "'reduction' twice"),
    (["train", "--freeze-backbone"], "--init-from"),
    # Counts of images in CLI spelling, with the count the data has (issue 17).
    (["train", "--data-dir", "{r}/data", "--subset", "5", "--out", "{r}/s1"],
     "expected --batch-size <= 5, the training images of fashion-mnist after --subset 5, "
     "got 128"),
    (["train", "--data-dir", "{r}/data", "--subset", "500", "--out", "{r}/s2"],
     "expected --subset <= 64, the training images of fashion-mnist, got 500"),
    (["train", "--data-dir", "{r}/data", "--test-subset", "33", "--out", "{r}/s3"],
     "expected --test-subset <= 32"),
    (["train", "--data-dir", "{r}/data", "--val-split", "64", "--out", "{r}/s4"],
     "expected --val-split < 64"),
    (["train", "--data-dir", "{r}/a_file", "--out", "{r}/s5"], "expected --data-dir to be a "
     "folder"),
    (["train", "--dataset", "folder:{r}/a_file", "--out", "{r}/s6"], "a file, not a folder"),
    (["train", "--resume", "--out", "{r}/empty_dir"], "--resume"),
    (["train", "--data-dir", "{r}/data", "--batch-size", "32", "--out", "{r}/i1",
      "--init-from", "{r}/empty.pt"],
     "empty file"),
    (["train", "--data-dir", "{r}/data", "--batch-size", "32", "--out", "{r}/i2",
      "--init-from", "{r}/random.pt"],
     "unreadable"),
    (["compare", "--attention", "se,,eca"], "non-empty names"),
    (["compare", "--attention", "se", "--seeds", "0"], "seed"),
    (["compare", "--attention", "se", "--jobs", "0"], "--jobs"),
    (["report", "{r}/missing"], "no such folder"),
    (["report", "{r}/empty_dir"], "finished runs"),
    (["bench", "--sizes", "8x64"], "--sizes"),
    (["bench", "nope"], "nope"),
    (["bench", "--threads", "0"], "--threads"),
    (["visualize", "--out", "{r}/v"], "--checkpoint or --model"),
    (["visualize", "--checkpoint", "{r}/empty.pt", "--out", "{r}/v"], "empty file"),
    (["visualize", "--checkpoint", "{r}/random.pt", "--out", "{r}/v"], "unreadable"),
    (["visualize", "--model", "small_cnn", "--attention", "se", "--data-dir", "{r}/data",
      "--pictures", "query", "--out", "{r}/v"], "--pictures among those this model allows"),
    (["visualize", "--model", "small_cnn", "--data-dir", "{r}/data", "--index", "999",
      "--out", "{r}/v"], "expected --index in [0, 32), the test images of fashion-mnist"),
    (["visualize", "--model", "small_cnn", "--data-dir", "{r}/data", "--sample", "-1",
      "--out", "{r}/v"], "--sample"),
    (["stats", "--checkpoint", "{r}/random.pt"], "unreadable"),
    (["stats", "--model", "small_cnn", "--data-dir", "{r}/data", "--images", "0"],
     "expected --images >= 1, got 0"),
    (["stats", "--model", "small_cnn", "--data-dir", "{r}/data", "--batch-size", "0"],
     "--batch-size"),
    (["trace", "nope"], "nope"),
    (["trace", "cbam", "--input", "a"], "--input"),
]


@pytest.mark.parametrize(("argv", "named"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_arguments_end_in_one_line_that_names_them(files, argv, named, capsys):
    argv = [a.format(r=files) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"attn2d {argv[0]}: error: "), last
    assert named in last, last


def test_quiet_hides_progress_messages_and_keeps_warnings(files, tmp_path, capsys):
    argv = ["train", "--data-dir", str(files / "data"), "--epochs", "1", "--subset", "32",
            "--batch-size", "16", "--no-progress", "--threads", "64"]
    assert main([*argv, "--out", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr().err
    assert "epoch 1/1" in loud and "attn2d train: warning: --threads 64 exceeds" in loud
    assert main(["--quiet", *argv, "--out", str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr().err
    assert "epoch 1/1" not in quiet and "warning: --threads 64 exceeds" in quiet
