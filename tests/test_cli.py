"""The command line: discovery, help, and the commands owned by the core package."""

from __future__ import annotations

import subprocess
import sys

import pytest

import attn2d
from attn2d.cli import main


def test_list_shows_every_mechanism_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for row in attn2d.available():
        assert row.name in out
    se_line = next(line for line in out.splitlines() if line.startswith("se "))
    assert "580" in se_line and "channel" in se_line and "block" in se_line


def test_shapes_runs_the_given_specs(capsys):
    assert main(["shapes", "se", "cbam(reduction=8)", "--input", "1x32x7x5"]) == 0
    out = capsys.readouterr().out
    assert "(1, 32, 7, 5) -> (1, 32, 7, 5)" in out
    assert "cbam(reduction=8)" in out


def test_bad_spec_is_reported_without_a_traceback(capsys):
    assert main(["shapes", "sqeeze"]) == 2
    err = capsys.readouterr().err
    assert "unknown mechanism 'sqeeze'" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["shapes", "--help"]])
def test_help_exits_cleanly(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "attn2d", "--help"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0
    assert "list" in done.stdout and "shapes" in done.stdout
