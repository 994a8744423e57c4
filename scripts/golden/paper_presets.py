"""Regenerate tests/golden/paper_presets.json: the settings each paper's own evaluation code runs with, read
from the reference repositories (the run scripts' arguments, argparse defaults, the assignments and literals
the evaluation scripts set), so tests/test_paper_presets.py can check every preset in configs/presets
against them without the references present.

    python scripts/golden/paper_presets.py --refs DIR [--out tests/golden/paper_presets.json]

DIR holds git checkouts (or bare mirrors with a `repo` git dir, as the search tool's fetch leaves them) named
<owner>+<name>: ArrowLuo+CLIP4Clip, foolwood+DRL, Ziyang412+UCoFiA, KoDohwan+VT-TWINS,
antoine77340+MIL-NCE_HowTo100M, TencentARC+TVTS, mengcaopku+LocVTP. Nothing here imports the references:
their files are read as text and parsed with `ast` (Python) or split into arguments (shell commands), so the
facts are what the files say, at the commit recorded next to them.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Ref:
    """One reference repository: read files at HEAD from a checkout or a bare mirror."""

    def __init__(self, root: Path):
        self.root = root
        gd = next((p for p in (root / "repo", root / ".git", root) if (p / "objects").is_dir() or (p / "HEAD").is_file()),
                  None)
        if gd is None:
            raise SystemExit(f"{root}: not a git checkout or mirror")
        self.git = ["git", f"--git-dir={gd}"]
        self.commit = self._run("rev-parse", "HEAD").strip()

    def _run(self, *args: str) -> str:
        return subprocess.run([*self.git, *args], check=True, capture_output=True, text=True).stdout

    def read(self, path: str) -> str:
        return self._run("show", f"HEAD:{path}")

    def where(self, path: str) -> str:
        return f"{self.root.name.replace('+', '/')}@{self.commit[:7]} {path}"


def shell_args(command: str) -> dict[str, str | bool]:
    """`--key value` / `--key=value` / bare `--flag` pairs of one shell command (continuations joined)."""
    toks = shlex.split(command.replace("\\\n", " "), comments=False)
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.startswith("--"):
            key, eq, val = t[2:].partition("=")
            if eq:
                out[key] = val
            elif i + 1 < len(toks) and not toks[i + 1].startswith("--"):
                out[key] = toks[i + 1]
                i += 1
            else:
                out[key] = True
        i += 1
    return out


def commands(text: str, must: str) -> list[dict]:
    """Every command (a line and its backslash continuations) containing `must`."""
    joined = re.sub(r"\\\s*\n", " ", text)
    return [shell_args(line) for line in joined.splitlines() if must in line]


def argparse_defaults(src: str) -> dict[str, object]:
    """{dest: default} of every `add_argument('--x', ..., default=V)` with a literal default."""
    out = {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and str(name.value).startswith("--"):
                for kw in node.keywords:
                    if kw.arg == "default":
                        try:
                            out[str(name.value)[2:]] = ast.literal_eval(kw.value)
                        except ValueError:
                            pass
    return out


CLIP_KEYS = ("fps", "num_windows_test", "num_frames", "video_size")


def attribute_assignments(src: str, obj: str = "args", keys: tuple[str, ...] = CLIP_KEYS) -> dict[str, object]:
    """`args.x = <literal>` statements for x in `keys` (the evaluation scripts override argparse defaults
    this way, e.g. VT-TWINS's eval_msrvtt.py sets args.fps = 20)."""
    out = {}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == obj:
                if t.attr not in keys:
                    continue
                try:
                    out[t.attr] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def space_joins(src: str) -> list[str]:
    """The arguments of every `" ".join(...)` call in a file, as source text."""
    out = []
    for node in ast.walk(ast.parse(src)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join"
                and isinstance(node.func.value, ast.Constant) and node.func.value.value == " " and node.args):
            out.append(ast.unparse(node.args[0]))
    return sorted(out)


def module_literal(src: str, name: str):
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def dict_literal_in(src: str, name: str) -> dict:
    """A dict literal assigned to `name` anywhere (e.g. `split_files = {...}` inside a method)."""
    return module_literal(src, name)


def loader_call_kwargs(src: str, loader: str) -> dict[str, object]:
    """Literal keyword arguments of the call to `loader(...)` (e.g. HMDB_DataLoader(..., with_flip=True))."""
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == loader:
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    out[kw.arg] = ast.unparse(kw.value)
            return out
    raise KeyError(loader)


def svm_facts(src: str) -> dict[str, object]:
    """The linear probe of eval_hmdb.py / eval_ucf.py: LinearSVC C values, feature width, splits."""
    tree = ast.parse(src)
    cs, width = None, None
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == "reg":
            cs = ast.literal_eval(node.iter)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "reshape" and node.args:
            a = node.args[0]
            if isinstance(a, ast.Tuple) and len(a.elts) == 2:
                try:
                    width = ast.literal_eval(a.elts[1])
                except ValueError:
                    pass
    splits = sorted({int(m) for m in re.findall(r"split(\d)\b", src)})
    return {"svm_C": cs, "feature_dim": width, "splits": splits}


def gather(refs: Path) -> dict:
    g: dict[str, dict] = {}
    r = Ref(refs / "ArrowLuo+CLIP4Clip")
    readme = r.read("README.md")
    for datatype, name in (("msrvtt", "clip4clip-msrvtt"), ("msvd", "clip4clip-msvd"), ("didemo", "clip4clip-didemo"),
                           ("activity", "clip4clip-activitynet")):
        cmd = next(c for c in commands(readme, "main_task_retrieval.py") if c.get("datatype") == datatype)
        g[name] = {"source": r.where("README.md"), "max_words": int(cmd["max_words"]),
                   "max_frames": int(cmd["max_frames"]), "feature_framerate": int(cmd["feature_framerate"]),
                   "slice_framepos": int(cmd["slice_framepos"]), "sim_header": cmd["sim_header"],
                   "expand_msrvtt_sentences": bool(cmd.get("expand_msrvtt_sentences", False))}
        loader = f"dataloaders/dataloader_{'activitynet' if datatype == 'activity' else datatype}_retrieval.py"
        # what the loader joins with one space: a video's sentence list (paragraph retrieval) or a word list
        g[name]["space_joins"] = {"source": r.where(loader), "joined": space_joins(r.read(loader))}

    r = Ref(refs / "foolwood+DRL")
    script = r.read("scripts/msrvtt.sh")
    for interaction in ("ti", "wti"):
        cmd = next(c for c in commands(script, "--do_train") if c.get("interaction") == interaction
                   and c.get("base_encoder") == "ViT-B/32" and "cdcr" not in c)
        g[f"drl-{interaction}-msrvtt"] = {"source": r.where("scripts/msrvtt.sh"), "max_words": int(cmd["max_words"]),
                                          "max_frames": int(cmd["max_frames"]),
                                          "video_framerate": int(cmd["video_framerate"]),
                                          "interaction": cmd["interaction"], "agg_module": cmd["agg_module"]}

    r = Ref(refs / "Ziyang412+UCoFiA")
    cmd = commands(r.read("eval_t2v/scripts/eval_msrvtt.sh"), "main_ucofia.py")
    if cmd:
        c = cmd[0]
    else:  # the command spans lines joined above; take the whole file as one command
        c = shell_args(r.read("eval_t2v/scripts/eval_msrvtt.sh"))
    g["ucofia-msrvtt"] = {"source": r.where("eval_t2v/scripts/eval_msrvtt.sh"), "max_words": int(c["max_words"]),
                          "max_frames": int(c["max_frames"]), "feature_framerate": int(c["feature_framerate"]),
                          "slice_framepos": int(c["slice_framepos"]), "sim_header": c["sim_header"],
                          "train_csv": Path(str(c["train_csv"])).name}

    r = Ref(refs / "KoDohwan+VT-TWINS")
    defaults = argparse_defaults(r.read("args.py"))
    base = {k: defaults[k] for k in ("fps", "num_windows_test", "num_frames", "video_size")}
    g["vt-twins-youcook2"] = {"source": r.where("src/eval_youcook.py") + " + args.py", **base,
                              **attribute_assignments(r.read("src/eval_youcook.py"))}
    g["vt-twins-msrvtt"] = {"source": r.where("src/eval_msrvtt.py") + " + args.py", **base,
                            **attribute_assignments(r.read("src/eval_msrvtt.py"))}
    for ds, loader in (("hmdb", "HMDB_DataLoader"), ("ucf", "UCF_DataLoader")):
        src = r.read(f"src/eval_{ds}.py")
        kw = loader_call_kwargs(src, loader)
        g[f"vt-twins-linear-probe-{'hmdb51' if ds == 'hmdb' else 'ucf101'}"] = {
            "source": r.where(f"src/eval_{ds}.py") + " + args.py", **base, **svm_facts(src),
            "with_flip": kw.get("with_flip"), "center_crop": kw.get("center_crop")}
    rows = list(csv.DictReader(io.StringIO(r.read("data/crosstask.csv"))))
    g["vt-twins-crosstask"] = {"source": r.where("data/crosstask.csv") + " + src/eval_crosstask.py", **base,
                               **attribute_assignments(r.read("src/eval_crosstask.py")),
                               "segments": len(rows), "videos": len({x["video_id"] for x in rows}),
                               "columns": list(rows[0])}

    r = Ref(refs / "antoine77340+MIL-NCE_HowTo100M")
    defaults = argparse_defaults(r.read("args.py"))
    mbase = {k: defaults[k] for k in CLIP_KEYS if k in defaults}
    readme = r.read("README.md")
    for script, name in (("eval_youcook.py", "milnce-youcook2"), ("eval_msrvtt.py", "milnce-msrvtt"),
                         ("eval_hmdb.py", "milnce-linear-probe-hmdb51")):
        src = r.read(script)
        # the README's run command overrides args.py's defaults (num_windows_test 10 where args.py says 4)
        run = next(c for c in commands(readme, f"python {script}"))
        readme_args = {k: int(v) for k, v in run.items() if k in CLIP_KEYS}
        g[name] = {"source": r.where(script) + " + args.py + README.md", **mbase, **attribute_assignments(src),
                   **readme_args, "args_py_num_windows_test": mbase.get("num_windows_test")}
        if "hmdb" in script:
            g[name].update(svm_facts(src))

    r = Ref(refs / "TencentARC+TVTS")
    for ds, cls in (("ucf101", "UCF101"), ("hmdb51", "HMDB51")):
        zsrc = r.read("v2/downstream/zero_recognition_TVTSv2_ViT_B_32.py")
        split_files = dict_literal_in(r.read(f"v2/data_loader/{cls}_dataset.py"), "split_files")
        conf = json.loads(r.read(f"v2/downstream/configs/zero-{ds}-vit-b-32.json"))
        test_list = split_files[conf["data_loader"]["args"]["split"]]
        g[f"tvtsv2-zeroshot-{ds}"] = {
            "source": r.where("v2/downstream/zero_recognition_TVTSv2_ViT_B_32.py") + f" + v2/data_loader/{cls}_dataset.py",
            "prompt_templates": module_literal(zsrc, "prompt_templates"),
            "test_list": test_list, "split": int(re.search(r"(\d+)", Path(test_list).name).group(1)),
            "num_frames": conf["data_loader"]["args"]["video_params"]["num_frames"],
            "input_res": conf["data_loader"]["args"]["video_params"]["input_res"],
            "topk": [1, 5] if "topk=(1, 5)" in zsrc else None}

    r = Ref(refs / "mengcaopku+LocVTP")
    src = r.read("concatHDF5.py")
    g["locvtp-export"] = {"source": r.where("concatHDF5.py"),
                          "dataset": re.search(r"\['(\w+)'\]\[:\]", src).group(1),
                          "reads_top_level_keys": "for vid in fin.keys()" in src}
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", required=True, type=Path, help="folder of <owner>+<name> reference checkouts")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/paper_presets.json")
    a = ap.parse_args()
    facts = gather(a.refs)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"wrote {a.out}: {len(facts)} presets")


if __name__ == "__main__":
    main()
