"""Print mutmut's diff of every mutant named on stdin (one process, not one `mutmut show` per mutant).

Run inside a mutmut work folder (the one holding mutants/), with the same setup.cfg: bench/mutation.sh does.
"""

import sys

from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

for name in (line.strip() for line in sys.stdin):
    if not name:
        continue
    try:
        m = find_mutant(name)
        print(f"# {name}")
        print(get_diff_for_mutant(name, path=m.path))
    except Exception as e:  # noqa: BLE001 - one unreadable mutant must not hide the rest
        print(f"# {name}: no diff ({e})")
