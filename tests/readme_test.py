"""Every ```python block of README.md runs as written (each in a fresh namespace)."""

import os
import re
import textwrap

import pytest

_README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks():
    with open(_README, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    # Blocks indented inside a list item run with their indentation removed.
    return [textwrap.dedent("".join(line[len(ind):] if line.startswith(ind) else line
                                    for line in code.splitlines(keepends=True)))
            for ind, code in blocks]


def test_readme_has_python_examples():
    assert len(_blocks()) >= 4


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_block_runs(index):
    code = _blocks()[index]
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})
