"""Capability checks: GSM8K scoring, the HumanEval sandbox, lm-eval on a local task (offline)."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import build_model
from vauban.capability.gsm8k import GSM8K, final_number, gold_number
from vauban.capability.humaneval import HumanEval, extract_code, program
from vauban.capability.sandbox import run_untrusted
from vauban.core.errors import VaubanError


def test_gsm8k_reads_the_final_number():
    assert final_number("3 + 4 = 7 apples.\nThe answer is 1,234.") == "1234"
    assert final_number("so $18.00 in total #### 18") == "18"
    assert final_number("Therefore \\boxed{42}") == "42"
    assert final_number("First 3, then 5, so 12") == "12"
    assert final_number("The answer is: **-3.50**") == "-3.5"
    assert final_number("no digits here") is None
    assert gold_number("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs...\n#### 18") == "18"


def test_gsm8k_runs_on_a_model(tokenizer, tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(
        "\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(3))
    )
    (score,) = GSM8K(data, limit=2, max_tokens=4).run(build_model("llama"), tokenizer)
    assert score.name == "gsm8k" and score.n == 2 and 0 <= score.value <= 1
    assert len(score.details) == 2 and {"gold", "predicted", "correct"} <= set(score.details[0])
    with pytest.raises(VaubanError, match="limit"):
        GSM8K(data, limit=0)
    with pytest.raises(VaubanError, match="no file"):
        GSM8K(tmp_path / "missing.jsonl").run(build_model("llama"), tokenizer)


PROBLEM = {
    "task_id": "t/0",
    "prompt": 'def add(a, b):\n    """Add two numbers."""\n',
    "entry_point": "add",
    "test": "def check(f):\n    assert f(2, 3) == 5\n",
}


def test_humaneval_programs_pass_and_fail_in_the_sandbox():
    full = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert extract_code(full).strip() == "def add(a, b):\n    return a + b"
    assert run_untrusted(program(PROBLEM, full)).passed
    assert run_untrusted(program(PROBLEM, "    return a + b")).passed  # a bare body completes the stub
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    assert run_untrusted(program(PROBLEM, wrong)).status == "failed"


def test_the_sandbox_has_no_network_limits_time_and_memory_and_stubs_dangerous_calls():
    net = run_untrusted("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)")
    assert net.status == "failed" and "unreachable" in net.output
    assert run_untrusted("while True:\n    pass", timeout=1).status == "timeout"
    assert "MemoryError" in run_untrusted("x = bytearray(2 * 1024**3)", memory_mb=256).output
    assert "not callable" in run_untrusted("import os\nos.system('true')").output
    assert run_untrusted("import os\nprint(os.getcwd())").output.strip().startswith("/tmp")  # a temp dir


def test_humaneval_needs_the_opt_in(tmp_path, tokenizer):
    data = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(data, "wt") as f:
        f.write(json.dumps(PROBLEM) + "\n")
    with pytest.raises(VaubanError, match="allow_code_execution"):
        HumanEval(data)
    (score,) = HumanEval(data, allow_code_execution=True, max_tokens=4).run(build_model("llama"), tokenizer)
    assert score.metric == "pass@1" and score.n == 1 and score.details[0]["status"] in ("passed", "failed")


TASK = """task: vauban_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_runs_a_local_task_on_the_in_memory_model(tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from vauban.capability.harness import Harness

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"question": q, "choices": ["yes", "no"], "answer": a})
            for q, a in (("Is fire hot?", 0), ("Is ice hot?", 1), ("Is the sun big?", 0))
        )
    )
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local.yaml").write_text(TASK.format(data=data))
    scores = Harness(("vauban_local",), limit=2, include_path=tmp_path / "tasks").run(
        build_model("llama"), tokenizer, batch_size=2
    )
    acc = next(s for s in scores if s.name == "vauban_local/acc")
    assert acc.n == 2 and 0 <= acc.value <= 1
    with pytest.raises(VaubanError, match="task names"):
        Harness(())
