"""The Figure 2 analogue made from finished runs: an overlay and a table of summaries."""

import pytest

from dftlab.reporting.histograms import main, parse_run


def test_overlay_and_table_from_finished_runs(runs, tmp_path, capsys):
    out = tmp_path / "fig2.png"
    main(
        [
            f"{runs / 'sft'}:before",
            str(runs / "sft"),
            str(runs / "dft"),
            "--out",
            str(out),
            "--labels",
            "base",
            "SFT",
            "DFT",
        ]
    )
    assert out.stat().st_size > 1000
    table = out.with_suffix(".md").read_text()
    printed = capsys.readouterr().out
    for label, point in (("base", "before"), ("SFT", "step_000002"), ("DFT", "step_000002")):
        assert f"| {label} | {point} |" in table and f"| {label} | {point} |" in printed


def test_run_specs_and_errors(runs, tmp_path):
    assert parse_run("/a/b:before") == (parse_run("/a/b")[0], "before")
    assert parse_run("/a/b")[1] == "final"
    with pytest.raises(SystemExit):
        main([str(runs / "sft"), "--out", str(tmp_path / "x.png"), "--labels", "a", "b"])
    with pytest.raises(SystemExit):
        main([f"{runs / 'sft'}:step_000009", "--out", str(tmp_path / "x.png")])
