"""What ships: `vtpipe models` (the registered models and their protocols) and `vtpipe presets` (the paper
presets and the reference code each follows)."""

from __future__ import annotations

import click

from pipeline.cli.common import CONTEXT, _fail
from stages.contract.errors import VtpipeError


@click.command(context_settings=CONTEXT)
def models():
    """List the registered models: feature size, unit, files, and each protocol (* = default) with its
    sampling policy, resize geometry, precision on CUDA and pixel aspect."""
    from stages.backbones.registry import list_models

    try:
        infos = list_models()
    except VtpipeError as e:
        _fail(e)
    from stages.backbones.registry import model_config

    for m in infos:
        files = ", ".join(m.files) or "-"
        click.echo(f"{m.name:<22} {m.embed_dim:>5}-d  per {m.unit:<5}  files: {files}")
        if m.description:
            click.echo(f"{'':<24}{m.description}")
        for pname in [m.protocol, *m.protocols]:
            p = m if pname == m.protocol else model_config(m.name, pname)
            sampling = ",".join(f"{k}={v}" for k, v in p.sampling.items())
            pre = p.preprocess
            backend = pre.get("backend", "torch")
            if backend == "torch":
                backend += ", antialias" if pre.get("antialias", True) else ", no antialias"
            geometry = (f"{pre.get('resize', 'short')} {pre.get('resize_to') or pre.get('size', 224)} "
                        f"{pre.get('interpolation', 'bicubic')} ({backend}), "
                        f"crop {pre.get('crop', 'center')} {pre.get('size', 224)}")
            tag = "protocol" if pname != m.protocol else "protocol*"
            click.echo(f"{'':<24}{tag} {pname}: sampling {sampling}; {geometry}; {p.precision} on CUDA; "
                       f"{p.aspect} pixels")


@click.command(context_settings=CONTEXT)
@click.option("--show", metavar="NAME", help="Print one preset's whole config (as YAML) and its notes.")
def presets(show):
    """List the paper presets: one per table a published system reports, each naming the reference code its
    settings come from. Use one with `preset: NAME` in a pipeline YAML or `vtpipe run ... --set preset=NAME`;
    keys you set yourself win over the preset's."""
    import yaml

    from pipeline.presets import list_presets, load_preset

    try:
        if show:
            p = load_preset(show)
            click.echo(f"# {p.name}: {p.paper}\n# reference: {p.reference}")
            if p.notes:
                click.echo("".join(f"# {line}\n" for line in p.notes.strip().splitlines()), nl=False)
            click.echo(yaml.safe_dump(p.config, sort_keys=False).rstrip())
            return
        found = list_presets()
        if not found:
            from pipeline.presets import presets_dir

            _fail(VtpipeError(f"no paper presets found in {presets_dir()}"))
        for p in found:
            click.echo(f"{p.name:<30} {p.paper}")
            click.echo(f"{'':<30} from {p.reference}")
    except VtpipeError as e:
        _fail(e)
