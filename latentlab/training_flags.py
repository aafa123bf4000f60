"""The training settings as flags: train.py's and the sweep's argparse flags, and the README's table of
them (flag_table), all from their one declaration (latentlab.settings.Settings)."""
from __future__ import annotations

from dataclasses import MISSING, fields

from latentlab.cli import make_parser
from latentlab.settings import Settings


def add_training_flags(parser, per_run: bool = True) -> None:
    """train.py's flags, one per setting. per_run=False leaves out --latent_size, --model,
    --dataset and --resume, which sweep_latent_size.py sets for each of its runs."""
    groups = {}
    for f in fields(Settings):
        m = f.metadata
        if m["shared"] or (m["per_run"] and not per_run):
            continue
        if m["group"] not in groups:
            groups[m["group"]] = parser.add_argument_group(m["group"])
        help_text = m["help"]
        if f.default is None or f.default is MISSING:  # argparse would add "(default: None)"; "%(default).0s" stops it
            help_text += (f" (default: {m['shown']})" if f.default is None else "") + "%(default).0s"
        if isinstance(f.default, bool):
            groups[m["group"]].add_argument(f"--{f.name}", action="store_true", help=help_text)
        elif m["nargs"]:
            groups[m["group"]].add_argument(f"--{f.name}", type=m["type"], nargs=m["nargs"], default=f.default,
                                            metavar="N", help=help_text)
        elif f.default is MISSING:
            groups[m["group"]].add_argument(f"--{f.name}", type=m["type"], required=True, help=help_text)
        else:
            groups[m["group"]].add_argument(f"--{f.name}", type=m["type"], choices=m["choices"], default=f.default,
                                            help=help_text)


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_table() -> str:
    """train.py's flags as the README's markdown table: one row per setting, then the shared flags."""
    lines = ["| flag | default | what |", "| --- | --- | --- |"]
    for f in fields(Settings):
        if not f.metadata["shared"]:
            shown = f.metadata["shown"] if f.default is None or f.default is MISSING else _shown(f.default)
            lines.append(f"| `--{f.name}` | {shown} | {f.metadata['help']} |")
    common = vars(make_parser("").parse_args([]))
    lines.append(f"| {', '.join(f'`--{k}`' for k in common)} | {', '.join(_shown(v) for v in common.values())} "
                 f"| shared by every step (see `python train.py --help`) |")
    return "\n".join(lines) + "\n"
