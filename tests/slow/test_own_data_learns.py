"""The README's "Train on your own data" walk-through, run as written: its files are written from the
README's own code blocks into a fresh directory, its commands run in order (``python`` in a fresh
interpreter, ``rlft`` through the CLI's entry point in this process, which shares the test run's Ray),
and the run must learn by the slow tier's three criteria (``conftest.Learning``): a JSONL dataset with
reference solutions, a reward written the rlft way and one in TRL's form, an SFT warm-up then GRPO
on the tiny model, and an evaluation that counts correct answers only. The same data as chat rows is
checked as written and trained for a few steps (SFT on the assistant's replies, then GRPO).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from launch.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Train on your own data"


def walkthrough() -> tuple[dict[str, str], list[list[str]]]:
    """The section's files (a code block whose first line is ``# PATH...``) and its commands (the
    ``bash`` block's lines)."""
    text = README.read_text()
    assert SECTION in text, f"the README has no {SECTION!r} section"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for lang, block in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S):
        if lang == "bash":
            commands += [shlex.split(line) for line in block.splitlines() if line.strip()]
            continue
        first = block.splitlines()[0]
        path = re.match(r"# (\S+?)(:|$)", first)
        assert path, f"a {lang} block of the walk-through does not start with '# PATH': {first!r}"
        files[path.group(1)] = block
    return files, commands


def rlft(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_the_readme_walk_through_learns_on_its_own_data(ray_session, learning_of, tmp_path, monkeypatch):
    files, commands = walkthrough()
    assert set(files) == {"my_task/make_data.py", "my_task/my_rewards.py", "my_task/config.yaml", "my_task/chat.yaml"}
    assert [c[:3] for c in commands] == [["python", "my_task/make_data.py"], ["rlft", "check", "my_task/config.yaml"],
                                         ["rlft", "check", "my_task/chat.yaml"], ["rlft", "train", "my_task/config.yaml"]]
    monkeypatch.chdir(tmp_path)
    for path, content in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    subprocess.run([sys.executable, *commands[0][1:]], check=True, timeout=120)
    rows = {name: len(Path(f"my_task/{name}.jsonl").read_text().splitlines())
            for name in ("train", "test", "chat_train", "chat_test")}
    assert rows == {"train": 2215, "test": 285, "chat_train": 2215, "chat_test": 285}  # 2,500 pairs split by crc32

    for command, first_prompt in ((commands[1], "'10+16='"), (commands[2], "'user: 10+16=\\nassistant: '")):
        code, out, err = rlft(*command[1:])
        assert code == 0, err
        assert "warning" not in err, err  # the references score: the fields and the rewards fit
        assert "sft: 2215 examples" in out and f"first prompt as the model sees it: {first_prompt}" in out, out

    # the chat rows, trained briefly: SFT on the closing assistant messages, then GRPO from them
    chat_stages = "stages=[{kind: sft, steps: 30, batch_size: 64, lr: 3.0e-3}, {kind: rl, steps: 2}]"
    code, out, err = rlft("train", "my_task/chat.yaml", "--run-dir", "runs/chat", "-q", chat_stages,
                          "evaluation.pass_k=0", "evaluation.num_prompts=32")
    assert code == 0, err
    chat = [json.loads(line) for line in Path("runs/chat/metrics.jsonl").read_text().splitlines()]
    sft_loss = [row["sft/loss"] for row in chat if "sft/loss" in row]
    assert len(sft_loss) == 30 and sum(sft_loss[-5:]) < 0.8 * sum(sft_loss[:5]), sft_loss  # it learns the replies
    assert [row["step"] for row in chat if "reward/mean" in row] == [31, 32]

    code, out, err = rlft(*commands[3][1:])
    assert code == 0, err
    run_dir = Path(commands[3][commands[3].index("--run-dir") + 1])
    learning = learning_of(run_dir)
    learning.assert_learned("the README walk-through")
    # accuracy counts correct answers (the `correct` reward), not the total with the format reward
    after = learning.after
    # mean_reward = accuracy + 0.1 x (share of bare numbers): the format reward shows there, never in accuracy
    assert 0 < after["eval/mean_reward"] - after["eval/accuracy"] <= 0.1 + 1e-9, after
