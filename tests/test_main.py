"""The main job, `python -m inception_fast`, at tiny sizes."""

import json
import subprocess
import sys

from inception_fast.__main__ import main


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "inception_fast", "--help"], capture_output=True, text=True, check=True)
    for option in ("--batch-sizes", "--dtype", "--memory-format", "--variant", "--device", "--backend", "--json"):
        assert option in out.stdout


def test_main_job_checks_parity_and_writes_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    rc = main(
        [
            "--device",
            "cpu",
            "--batch-sizes",
            "1,2",
            "--image-size",
            "48",
            "--repeats",
            "1",
            "--backend",
            "torch",
            "--json",
            str(path),
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "parity [torch]" in printed and "img/s" in printed
    data = json.loads(path.read_text())
    assert data["baseline"] == "torchvision"
    assert data["parity"]["torch"] <= data["parity_bound"]
    assert {(r["model"], r["batch"]) for r in data["results"]} == {
        ("torchvision", 1),
        ("torchvision", 2),
        ("fused[torch]", 1),
        ("fused[torch]", 2),
    }
    assert all(r["images_per_s"] > 0 for r in data["results"])


def test_main_job_other_variant_and_format(capsys):
    rc = main(
        [
            "--device",
            "cpu",
            "--batch-sizes",
            "1",
            "--variant",
            "d2l",
            "--image-size",
            "32",
            "--repeats",
            "1",
            "--memory-format",
            "contiguous",
            "--backend",
            "torch",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "reference" in capsys.readouterr().out


def test_main_job_rejects_unavailable_backend(capsys):
    assert main(["--device", "cpu", "--backend", "nope", "--no-progress"]) == 2
    assert "unavailable on cpu" in capsys.readouterr().err


def test_every_option_has_help_and_says_its_default_once():
    from inception_fast.__main__ import build_parser as main_parser
    from inception_fast.train import build_parser as train_parser

    for parser in (main_parser(), train_parser()):
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{action.option_strings[0]} has no help text"
                assert formatter._expand_help(action).count("default") <= 1, action.option_strings
