"""Command-line options and paper presets: an option left at its default must not override a preset's key.

`vtpipe evaluate --set preset=clip4clip-msrvtt` lays the preset under the config the options build; each option
has a default (`--ties optimistic`), so without this the defaults would silently replace the paper's
conventions (`ties: clip4clip`). With a preset, only the options given on the command line (or by environment)
enter the user config.
"""

from __future__ import annotations

import click
from click.core import ParameterSource


def given_only(section: dict, option_of: dict[str, str], preset: object) -> dict:
    """`section` (config key -> value) without the keys whose option (`option_of[key]`, the click parameter
    name) was left at its default, when a paper preset is in use; unchanged otherwise."""
    if not preset:
        return section
    ctx = click.get_current_context()
    out = {}
    for key, value in section.items():
        name = option_of.get(key)
        if name is None or ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            out[key] = value
    return out
