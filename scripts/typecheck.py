"""Type-check the package with mypy against a baseline that may only shrink.

    python scripts/typecheck.py            # fail on any error not in the baseline, or on baseline entries now fixed
    python scripts/typecheck.py --update   # rewrite the baseline from today's errors (scripts/fix-style.sh runs this)

The baseline (`.ci/mypy-baseline.txt`) holds one line per error as `path: [code] message`, without line numbers, so
editing a file elsewhere does not churn it; an error that occurs twice in a file is listed twice. A new error fails
with its line number. A fixed one also fails, asking for `--update`, so the file records every improvement and the
count can only go down (review the diff of an `--update` that adds lines: it means new type errors were accepted).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "mypy-baseline.txt"
_ERROR = re.compile(
    r"^(?P<path>[^:\s]+\.pyi?):(?P<line>\d+)(?::\d+)?: error: (?P<message>.*?)(?:\s+\[(?P<code>[\w-]+)\])?$"
)


def run_mypy() -> list[tuple[str, str]]:
    """Run mypy (configured in pyproject.toml) and return (key, location) per error, in mypy's order."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty", "--show-column-numbers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    errors = []
    for line in proc.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            # Messages may quote other line numbers ("defined on line 12"): drop them too, for the same reason.
            message = re.sub(r"\bline \d+", "line N", match["message"])
            errors.append(
                (f"{match['path']}: [{match['code'] or 'misc'}] {message}", f"{match['path']}:{match['line']}")
            )
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not errors):  # 2: mypy itself failed
        sys.exit(f"mypy failed to run (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline from today's errors")
    args = parser.parse_args(argv)
    errors = run_mypy()
    current = Counter(key for key, _ in errors)
    baseline = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else Counter()
    new, fixed = current - baseline, baseline - current
    if args.update:
        BASELINE.parent.mkdir(exist_ok=True)
        BASELINE.write_text("".join(f"{key}\n" for key in sorted(current.elements())))
        print(
            f"type baseline: {sum(current.values())} errors (was {sum(baseline.values())}; "
            f"{sum(fixed.values())} fixed, {sum(new.values())} added) -> {BASELINE.relative_to(ROOT)}"
        )
        return 0
    if new:
        print(f"mypy: {sum(new.values())} new type error(s) (not in {BASELINE.relative_to(ROOT)}):")
        remaining = Counter(new)
        for key, where in errors:
            if remaining[key] > 0:
                remaining[key] -= 1
                print(f"  {where}: {key.split(': ', 1)[1]}")
        print("Fix them (preferred), or, if one is a false positive, add `# type: ignore[code]` with a reason.")
    if fixed:
        print(
            f"mypy: {sum(fixed.values())} baseline error(s) are fixed; shrink the baseline with "
            f"`python scripts/typecheck.py --update` and commit it:"
        )
        for key in sorted(fixed.elements()):
            print(f"  {key}")
    if new or fixed:
        return 1
    print(f"mypy: no new type errors ({sum(current.values())} in the baseline, which may only shrink)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
