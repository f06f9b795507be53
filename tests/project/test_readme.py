"""The README's Python example runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs():
    text = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    fit = scope["fit"]
    assert abs(float(fit.weights[0]) - 0.7) < 0.1  # target is a^0.7 b^0.3
    assert scope["merged"].keys() == scope["members"][0].keys()
