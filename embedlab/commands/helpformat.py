"""Help that reads like the README: ``embedlab search [OPTIONS] OUT QUERY``, ``--k N``, flags bare.

Typer's defaults print ``{out}`` / ``[corpus]`` in usage lines and ``<int>`` / ``<bool>`` after
each option; this command class writes arguments in capitals (optional ones in brackets) and
value types as README words (N, NUM, PATH, TEXT).
"""

from __future__ import annotations

import re

from typer.core import TyperCommand

TYPE_WORDS = {"int": "N", "float": "NUM", "path": "PATH", "str": "TEXT", "int range": "N",
              "float range": "NUM"}
_TYPE = re.compile(r"<([a-z ]+)>")


def _word(match: re.Match) -> str:
    return TYPE_WORDS.get(match[1], match[1].upper())


class ReadmeCommand(TyperCommand):
    """A Typer command whose usage line and option list follow the README's notation."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(((param.metavar or param.name or "").upper(), record[1]))
            else:
                opts.append((_TYPE.sub(_word, record[0]), record[1]))
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)
