"""`python -m fusedinit bench` / `init-model`: every bad argument or input is one line on stderr
and exit code 2 (argparse's convention), never a traceback; the benchmark's output starts with
the benchmark, not with a toolchain warning."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedinit

PACKAGE_PARENT = str(Path(fusedinit.__file__).resolve().parents[1])


def run_cli(*args, cwd=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "fusedinit", *map(str, args)], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)


def assert_usage_error(res, *words):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    assert ": error: " in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert res.stdout == "", res.stdout


@pytest.mark.parametrize("args, words", [
    ([], ["command"]),
    (["frobnicate"], ["command", "frobnicate"]),
    (["bench", "--bogus"], ["--bogus"]),
    (["bench", "--sizes", "abc"], ["--sizes", "'abc'"]),
    (["bench", "--sizes", "-1"], ["--sizes", "-1"]),
    (["bench", "--sizes", "20,99"], ["--sizes", "99"]),
    (["bench", "--sizes", "20,,22"], ["--sizes"]),
    (["bench", "--dtypes", "float32,int8"], ["--dtypes", "int8"]),
    (["bench", "--dtypes", ""], ["--dtypes"]),
    (["bench", "--ops", "normal,gamma"], ["--ops", "gamma"]),
    (["bench", "--threads", "0"], ["--threads", "0"]),
    (["bench", "--threads", "two"], ["--threads", "two"]),
    (["bench", "--min-run-time", "-1"], ["--min-run-time", "-1"]),
    (["bench", "--min-run-time", "nan"], ["--min-run-time"]),
    (["bench", "--device", "tpu:0"], ["--device", "tpu"]),
    (["bench", "--device", "banana"], ["--device", "banana"]),
    (["init-model"], ["config"]),
    (["init-model", "llama-1b", "--seed", "-1"], ["--seed", "-1"]),
    (["init-model", "llama-1b", "--seed", str(2**64)], ["--seed"]),
    (["init-model", "llama-1b", "--dtype", "int8"], ["--dtype", "int8"]),
    (["init-model", "llama-1b", "--device", "banana"], ["--device", "banana"]),
])
def test_bad_arguments(args, words):
    assert_usage_error(run_cli(*args), *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", [["bench"], ["init-model", "llama-1b"]])
def test_cuda_device_without_gpu(command):
    assert_usage_error(run_cli(*command, "--device", "cuda"), "--device", "no CUDA device")


def test_bench_out_is_a_file(tmp_path):
    out = tmp_path / "taken"
    out.write_text("")
    assert_usage_error(run_cli("bench", "--out", out / "sub"), "--out")


CONFIG_CASES = {
    "missing": (None, ["neither a preset", "missing"]),
    "not_json": ("{'model_type': 'llama',", ["not valid JSON"]),
    "a_list": ("[1, 2]", ["JSON list, not an object"]),
    "a_string": ('"llama"', ["JSON str, not an object"]),
    "no_model_type": ('{"hidden_size": 64}', ["model_type"]),
    "unknown_model_type": ('{"model_type": "no-such-model"}', ["unknown model_type", "no-such-model"]),
    "bad_value": ('{"model_type": "llama", "num_attention_heads": 0, "hidden_size": 64}', ["config"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_init_model_bad_config_file(tmp_path, case):
    pytest.importorskip("transformers")
    text, words = CONFIG_CASES[case]
    path = tmp_path / "missing.json" if text is None else tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    assert_usage_error(run_cli("init-model", path), "config", *words)


def test_init_model_folder_without_config(tmp_path):
    pytest.importorskip("transformers")
    assert_usage_error(run_cli("init-model", tmp_path), "config", "no config.json")


def test_init_model_folder_with_bad_config(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text("[]")
    assert_usage_error(run_cli("init-model", tmp_path), "config", "not an object")


def test_init_model_not_a_causal_lm(tmp_path):
    pytest.importorskip("transformers")
    # ViT has a config class but no causal-LM model.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert_usage_error(run_cli("init-model", tmp_path / "config.json"), "config", "ViTConfig")


def test_init_model_tiny_config_runs(tmp_path):
    """The checks above refuse bad input only: a small valid config.json still builds."""
    pytest.importorskip("transformers")
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 256}
    (tmp_path / "config.json").write_text(json.dumps(config))
    res = run_cli("init-model", tmp_path, "--seed", str(2**64 - 1))
    assert res.returncode == 0, res.stderr
    assert "LlamaForCausalLM" in res.stdout and "fusedinit.from_config" in res.stdout


def test_bench_output_starts_with_the_benchmark(tmp_path):
    """No `No CUDA runtime is found, using CUDA_HOME=...` from importing torch.utils.benchmark
    (cpp_extension logs it on GPU-less machines with nvcc on PATH)."""
    res = run_cli("bench", "--sizes", "10", "--dtypes", "float32", "--ops", "uniform",
                  "--min-run-time", "0.01", "--no-plot", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "No CUDA runtime" not in res.stderr + res.stdout
    assert res.stdout.startswith("device cpu") or res.stdout.startswith("device cuda"), res.stdout
    assert f"backends: {', '.join(fusedinit.available_backends())}" in res.stdout.splitlines()[0]
