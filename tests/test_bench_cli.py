"""The benchmark CLI runs end to end on a tiny configuration and writes its JSON and plot."""
import json

from fusedinit.__main__ import main


def test_bench_cli_tiny(tmp_path, capsys):
    rc = main(["bench", "--sizes", "12", "--dtypes", "float32,bfloat16", "--ops", "normal,uniform",
               "--min-run-time", "0.01", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| normal | float32 | 2^12 |" in out and "speedup" in out
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(data["rows"]) == 4 and all(r["fused_eps"] > 0 for r in data["rows"])
    assert next(tmp_path.glob("*.png")).stat().st_size > 1000
