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
