"""Print the README's plugin definition (what a user pastes into another project's meltano.yml).

usage: python scripts/readme_plugin.py [--pip-url URL]   (--pip-url: in place of the README's placeholder)

scripts/e2e_elsewhere.sh installs exactly this block; tests/test_packaging.py checks it declares what
meltano.yml declares.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- plugin-definition:begin[^>]*-->\n```yaml\n(.*?)```\n<!-- plugin-definition:end -->", re.S)
PIP_URL = re.compile(r"^(    pip_url: ).*$", re.M)


def plugin_definition(pip_url: str | None = None) -> str:
    match = BLOCK.search(README.read_text())
    if match is None:
        raise SystemExit("README.md has no plugin-definition block")
    block = match.group(1)
    return PIP_URL.sub(lambda m: m.group(1) + pip_url, block, count=1) if pip_url else block


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pip-url")
    print(plugin_definition(parser.parse_args().pip_url), end="")


if __name__ == "__main__":
    main()
