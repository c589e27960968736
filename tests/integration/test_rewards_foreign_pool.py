"""Rewards written for TRL and verl in the real isolated reward processes (``rewards.pool``), scored
as their own frameworks would; a signature of no form refused with every accepted form named; and
``rlft check`` warning when the reference answers score 0 on every row (the answer field names full
solutions, which a verl-style reward's extraction never matches)."""

from __future__ import annotations

import contextlib
import io
import textwrap

import pytest

from launch.cli import main
from rlft.config import RewardFunctionConfig
from rewards.api import RewardError
from rewards.pool import RewardPool, runtime_sample

REWARDS = textwrap.dedent(
    """
    import asyncio

    def accuracy_reward(completions, answer, **kwargs):          # TRL, a dataset column named
        return [float(c.strip() == a) for c, a in zip(completions, answer)]

    def format_reward(completions, **kwargs):                    # TRL, None: does not apply
        return [None if not c else float(c.isdigit()) for c in completions]

    def sizes(prompts, completions, **kwargs):                   # TRL, unmarked: batched by keyword
        return [len(p) + n for p, n in zip(prompts, kwargs["num_tokens"])]

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, format_score=0.0):  # verl
        ok = solution_str.strip() == ground_truth
        return {"score": 1.0 if ok else format_score, "acc": float(ok), "gsm8k": float(data_source == "gsm8k"),
                "level": extra_info["level"], "prompt": extra_info["prompt"]}

    async def index_score(data_source, solution_str, ground_truth, extra_info=None):   # verl, async
        await asyncio.sleep(0)
        return float(extra_info["index"])

    def one_arg(x):
        return 0.0
    """
)

ANSWERS = ["4", "7", "6", "8"]
COMPLETIONS = ["4", "5", "", " 8"]


def _samples():
    return [
        runtime_sample(
            f"q{i}=",
            c,
            {"answer": a, "level": f"L{i}", "data_source": "gsm8k" if i % 2 == 0 else "math", "extra_info": {"index": i}},
            prompt_id=f"p{i}",
            num_tokens=i + 1,
            finish_reason="stop",
            max_new_tokens=6,
        )
        for i, (a, c) in enumerate(zip(ANSWERS, COMPLETIONS))
    ]


def test_trl_and_verl_rewards_score_in_the_isolated_pool(tmp_path):
    path = tmp_path / "foreign_rewards.py"
    path.write_text(REWARDS)
    functions = [
        RewardFunctionConfig(path=f"{path}:accuracy_reward"),
        RewardFunctionConfig(path=f"{path}:format_reward"),
        RewardFunctionConfig(path=f"{path}:sizes"),
        RewardFunctionConfig(path=f"{path}:compute_score", params={"format_score": 0.1}),
        RewardFunctionConfig(path=f"{path}:index_score"),
    ]
    with RewardPool(functions, processes=1, timeout_s=5.0) as pool:
        out = pool.score(_samples())

    assert all(not o.failed for column in out.values() for o in column), out
    assert [o.score for o in out["accuracy_reward"]] == [1.0, 0.0, 0.0, 1.0]
    assert [o.score for o in out["format_reward"]] == [1.0, 1.0, 0.0, 0.0]  # "" -> None -> 0; " 8" not digits
    assert [o.score for o in out["sizes"]] == [4.0, 5.0, 6.0, 7.0]  # len("qi=") 3 + num_tokens i+1
    verl = out["compute_score"]
    assert [o.score for o in verl] == [1.0, 0.1, 0.1, 1.0]  # " 8".strip() == "8"; params: format_score 0.1
    assert [o.returned for o in verl] == ["RewardResult"] * 4
    assert verl[0].info == {"acc": 1.0, "gsm8k": 1.0, "level": "L0", "prompt": "q0="}
    assert verl[1].info == {"acc": 0.0, "gsm8k": 0.0, "level": "L1", "prompt": "q1="}
    assert [o.score for o in out["index_score"]] == [0.0, 1.0, 2.0, 3.0]  # the row's extra_info column

    with pytest.raises(RewardError) as info:
        RewardPool([RewardFunctionConfig(path=f"{path}:one_arg")], processes=1)
    message = str(info.value)
    assert "reward 'one_arg' has the wrong signature one_arg(x): a reward takes (prompt, completion, **fields)" in message
    assert "(prompts, completions, **fields) marked @batched" in message
    assert "TRL's reward(completions, **kwargs)" in message
    assert "verl's compute_score(data_source, solution_str, ground_truth, extra_info=None)" in message


VERL_GSM8K = textwrap.dedent(
    """
    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        return float(solution_str.split("####")[-1].strip() == ground_truth)
    """
)


def _check(*args: str, cwd) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", *args])
    return code, out.getvalue(), err.getvalue()


def test_check_warns_when_every_reference_answer_scores_zero(tmp_path):
    (tmp_path / "verl_reward.py").write_text(VERL_GSM8K)
    rows = [("2+2=", "2 and 2 make 4 #### 4", "4"), ("3+4=", "3 and 4 make 7 #### 7", "7")]
    (tmp_path / "data.jsonl").write_text(
        "".join(f'{{"prompt": "{p}", "solution": "{s}", "final": "{f}"}}\n' for p, s, f in rows)
    )
    (tmp_path / "exp.yaml").write_text(
        "name: exp\nmodel: {path: 'builtin:tiny'}\n"
        "data: {train_path: ./data.jsonl, eval_path: ./data.jsonl, answer_field: solution}\n"
        "reward: {functions: [{path: ./verl_reward.py:compute_score}]}\n"
    )
    code, out, err = _check("exp.yaml", cwd=tmp_path)
    assert code == 0, err  # a warning, not a failure
    assert "#   reward compute_score: 4/4 calls ok, returned float, values in [0, 0]" in out
    assert "rlft: warning: the reference answers score 0 or less on all 2 checked rows" in err
    assert "data.answer_field" in err

    code, out, err = _check("exp.yaml", "data.answer_field=final", cwd=tmp_path)  # the final answers: 1
    assert code == 0 and "values in [0, 1]" in out and "warning" not in err, err
