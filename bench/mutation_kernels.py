"""Mutation testing of the numba kernels, which mutmut never mutates (not part of CI).

mutmut 3 skips every decorated function (its trampolines cannot wrap a compiled function), so the
``@njit`` kernels, where the counting and Sinkhorn arithmetic actually happens, get no mutants from
``bench/mutation.sh``. This runs cosmic-ray (a maintained mutation tool that edits the module file itself)
over exactly those functions:

    .venv/bin/python bench/mutation_kernels.py                       # the default module/test pairs below
    .venv/bin/python bench/mutation_kernels.py --only stages/retrieval/rank_kernels.py --out /tmp/mk
    .venv/bin/python bench/mutation_kernels.py --list                # count the mutants, run nothing

How:
- The committed tree (``git archive HEAD``) is copied once per parallel worker; each worker mutates its
  own copy, so the checkout is never touched.
- cosmic-ray generates the mutants of the whole module; those outside numba-decorated functions (mutmut's
  ground) and the decorator removals are marked skipped, and so are operator replacements that no
  reader would call a plausible slip (bit shifts and bitwise operators standing for arithmetic ones).
- The tests run with ``NUMBA_DISABLE_JIT=1``: the kernels execute as the Python they are written in
  (``prange`` becomes ``range``), so a mutant costs one pytest run, not a recompilation of every kernel.
  Python raises ``IndexError`` where compiled code would read out of bounds silently, so a mutant killed
  only by such an exception might survive compiled; the report counts those apart (``killed by an
  exception``), and ``--compiled`` re-runs each survivor with the JIT on, to show it survives there too.
- A run's session database (cosmic-ray's own format: ``cr-report DIR/<module>.sqlite`` reads it), the
  survivors' diffs and a summary line per module go to ``--out``.

Score = killed / (killed + survived), as in bench/mutation.sh.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: the kernels called directly against NumPy references (fast as Python: it runs first, and with -x a
#: mutant it kills costs well under a second of tests)
KERNEL_TESTS = "tests/test_numba_kernels.py"
#: module | covering tests | pytest -k filter. The -k filters drop the 512-dimensional parametrisations and
#: the three SK-norm blockwise-vs-dense cases that take ~17 s each as Python (test_numba_kernels.py and the
#: accuracy-contract tests drive the same kernels on smaller blocks).
PAIRS = [
    ("stages/retrieval/rank_kernels.py", f"{KERNEL_TESTS} tests/test_retrieval_metrics.py tests/test_metrics_edges.py "
     "tests/test_pair_ranks_edges.py", ""),
    ("stages/retrieval/_numba.py", f"{KERNEL_TESTS} tests/test_retrieval_metrics.py tests/test_metrics_edges.py "
     "tests/test_pair_ranks_edges.py tests/test_sk_norm_edges.py", ""),
    ("stages/retrieval/sk_norm.py", f"{KERNEL_TESTS} tests/test_sk_norm_edges.py tests/test_rerank.py",
     "not 512 and not blockwise_equals_dense"),
    ("stages/retrieval/rerank.py", f"{KERNEL_TESTS} tests/test_rerank_edges.py tests/test_rerank.py",
     "not 512 and not blockwise_equals_dense"),
    ("stages/retrieval/similarity.py", f"{KERNEL_TESTS} tests/test_token_similarity_eval.py", ""),
]

#: operator replacements left out: a bitwise or shift operator standing for an arithmetic one (and the
#: reverse) is not a slip anyone makes, and cosmic-ray makes ten of them per binary operator
SKIP_OPERATORS = re.compile(
    r"core/ReplaceBinaryOperator_\w+_(RShift|LShift|BitOr|BitAnd|BitXor|Pow|Mod)$"
    r"|core/ReplaceBinaryOperator_(RShift|LShift|BitOr|BitAnd|BitXor|Pow|Mod)_\w+$"
    r"|core/RemoveDecorator$"
)


def kernel_line_ranges(path: Path) -> list[tuple[int, int, str]]:
    """(first line, last line, name) of every function decorated by numba (``njit``/``jit``/``vectorize``)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name in ("njit", "jit", "vectorize", "guvectorize"):
                out.append((node.lineno, node.end_lineno, node.name))
                break
    return out


def _in_kernel(mutation, ranges) -> str | None:
    line = mutation.start_pos[0]
    for lo, hi, name in ranges:
        if lo <= line <= hi:
            return name
    return None


def _copy_tree(dest: Path) -> None:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def _test_command(tests: str, kfilter: str) -> str:
    cmd = f"{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"
    return cmd + (f" -k '{kfilter}'" if kfilter else "")


def _worker(args):
    """Run one mutant in worker copy `root` (the module path in the spec is relative)."""
    root, mutations, command, timeout = args
    from cosmic_ray.mutating import mutate_and_test

    os.chdir(root)
    t0 = time.monotonic()
    result = mutate_and_test(mutations, command, timeout)
    return result, time.monotonic() - t0


def run_module(module: str, tests: str, kfilter: str, jobs: int, timeout: float, out: Path | None,
               list_only: bool, compiled: bool) -> dict:
    from cosmic_ray.commands import init as cr_init
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    work = Path(tempfile.mkdtemp(prefix="vtpipe-mutk-"))
    roots = [work / f"w{i}" for i in range(max(1, jobs))]
    for r in roots:
        _copy_tree(r)
    tests = " ".join(t for t in tests.split() if (roots[0] / t).exists())  # as committed
    db_path = (out / (Path(module).stem + ".sqlite")) if out else work / "session.sqlite"
    if db_path.exists():
        db_path.unlink()
    ranges = kernel_line_ranges(roots[0] / module)
    os.chdir(roots[0])
    counts = {"killed": 0, "survived": 0, "skipped": 0, "incompetent": 0, "by_exception": 0, "timeout": 0}
    survivors = []
    with use_db(str(db_path), WorkDB.Mode.create) as db:
        cr_init([Path(module)], db, {})
        pending = []
        for item in db.work_items:
            m = item.mutations[0]
            if _in_kernel(m, ranges) is None or SKIP_OPERATORS.search(m.operator_name):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                      output="outside the numba kernels or left-out operator"))
                counts["skipped"] += 1
            else:
                pending.append(item)
        print(f"== {module}: {len(pending)} kernel mutants in {len(ranges)} kernels "
              f"({counts['skipped']} others skipped); tests: {tests}{f'; -k {kfilter!r}' if kfilter else ''}",
              flush=True)
        if list_only:
            shutil.rmtree(work, ignore_errors=True)
            return counts
        command = _test_command(tests, kfilter)
        os.environ["NUMBA_DISABLE_JIT"] = "1"
        # baseline: the unmutated copy must pass, or every mutant would read "killed"
        base = subprocess.run(shlex.split(command), cwd=roots[0], capture_output=True, text=True)
        if base.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise SystemExit(f"the tests fail on the unmutated tree (commit them first?):\n{command}\n"
                             + base.stdout[-3000:] + base.stderr[-2000:])
        t0 = time.monotonic()
        done = 0
        with ProcessPoolExecutor(max_workers=len(roots)) as pool:
            # one copy per worker slot: item i runs in copy i % jobs, and at most `jobs` run at once, so
            # two mutants never share a copy (the pool takes items in order, one per free worker)
            for start in range(0, len(pending), len(roots)):
                batch = pending[start:start + len(roots)]
                futs = [pool.submit(_worker, (str(roots[k]), item.mutations, command, timeout))
                        for k, item in enumerate(batch)]
                for item, fut in zip(batch, futs):
                    result, secs = fut.result()
                    db.set_result(item.job_id, result)
                    done += 1
                    m = item.mutations[0]
                    where = f"{_in_kernel(m, ranges)}:{m.start_pos[0]} {m.operator_name}#{m.occurrence}"
                    if result.test_outcome == TestOutcome.SURVIVED:
                        counts["survived"] += 1
                        survivors.append((where, item, result))
                    elif result.test_outcome == TestOutcome.KILLED:
                        counts["killed"] += 1
                        text = result.output or ""
                        if text == "timeout":
                            counts["timeout"] += 1
                        elif re.search(r"^E\s+(IndexError|ZeroDivisionError|TypeError|ValueError|OverflowError)",
                                       text, re.M) and "AssertionError" not in text:
                            counts["by_exception"] += 1
                    else:
                        counts["incompetent"] += 1
                if done % 20 == 0 or done == len(pending):
                    print(f"   {done}/{len(pending)} run, {counts['killed']} killed, {counts['survived']} survived, "
                          f"{time.monotonic() - t0:.0f} s", flush=True)
        os.environ.pop("NUMBA_DISABLE_JIT", None)
        compiled_kept = None
        if compiled and survivors:
            compiled_kept = 0
            for where, item, _ in survivors:
                r, _secs = _worker((str(roots[0]), item.mutations, command, max(timeout, 600.0)))
                compiled_kept += r.test_outcome == TestOutcome.SURVIVED
                print(f"   compiled: {where}: {r.test_outcome}", flush=True)
    total = counts["killed"] + counts["survived"]
    score = f"{counts['killed'] / total:.3f}" if total else "n/a"
    secs = time.monotonic() - t0
    line = (f"{module} kernel_mutants={len(pending)} killed={counts['killed']} survived={counts['survived']} "
            f"incompetent={counts['incompetent']} killed_by_exception={counts['by_exception']} "
            f"timeouts={counts['timeout']} score={score} seconds={secs:.0f}"
            + (f" survivors_still_surviving_compiled={compiled_kept}/{len(survivors)}" if compiled_kept is not None
               else ""))
    print("   " + line, flush=True)
    for where, _item, _r in survivors:
        print(f"   SURVIVED {where}")
    if out:
        with open(out / "summary.txt", "a") as fh:
            fh.write(line + "\n")
        with open(out / (Path(module).stem + ".survivors.diff"), "w") as fh:
            for where, _item, r in survivors:
                fh.write(f"### {where}\n{r.diff}\n")
    os.chdir(REPO)
    shutil.rmtree(work, ignore_errors=True)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="modules of the default list to run (default: all)")
    ap.add_argument("--module", help="a module not in the default list (with --tests)")
    ap.add_argument("--tests", help="covering test files for --module (space separated)")
    ap.add_argument("-k", dest="kfilter", default="", help="pytest -k filter for --module")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants run at once (default: cores)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one mutant's tests may take (killed after)")
    ap.add_argument("--out", type=Path, help="folder for the session databases, survivor diffs and summary")
    ap.add_argument("--list", action="store_true", help="count the kernel mutants, run nothing")
    ap.add_argument("--compiled", action="store_true", help="re-run each survivor with the JIT on")
    a = ap.parse_args(argv)
    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        print("cosmic-ray is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if a.module:
        if not a.tests:
            ap.error("--module needs --tests")
        pairs = [(a.module, a.tests, a.kfilter)]
    else:
        pairs = [p for p in PAIRS if not a.only or p[0] in a.only]
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        a.out = a.out.resolve()
    for module, tests, kfilter in pairs:
        run_module(module, tests, kfilter, a.jobs, a.timeout, a.out, a.list, a.compiled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
