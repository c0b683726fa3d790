"""Copy the generated result tables into README.md, between the markers

    <!-- generated:NAME -->  ...  <!-- /generated:NAME -->

so README figures always come from committed results files, never typed by
hand. ``--check`` exits 1 when the README is out of date (a test runs it).

    python scripts/update_readme.py [--check]
"""
import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {  # marker name -> generated markdown file
    "cpu-xeon-benchmarks": "benchmarks/results/cpu-intel-xeon/readme_fragment.md",
    "cpu-xeon-avx2-benchmarks": "benchmarks/results/cpu-intel-xeon/avx2/readme_fragment.md",
    "cpu-benchmarks": "benchmarks/results/cpu-amd-epyc/readme_fragment.md",
    "digits-accuracy": "benchmarks/results/training/digits_methods.md",
}


def render(readme: str) -> str:
    for name, source in SOURCES.items():
        block = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not block.search(readme):
            raise SystemExit(f"README.md: marker <!-- generated:{name} --> not found")
        text = (ROOT / source).read_text().rstrip("\n") + "\n"
        readme = block.sub(lambda m: m.group(1) + text + m.group(2), readme)
    return readme


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that README.md is current")
    args = p.parse_args()
    path = ROOT / "README.md"
    current = path.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md is out of date: run python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
