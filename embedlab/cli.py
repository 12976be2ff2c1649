"""The ``embedlab`` command: each subcommand builds a config and calls the library.

Exit status (embedlab/errors.py): 0 success; 1 the job failed (the message says why); 2 bad
usage; 3 the job finished but rejected some input records (listed in OUT/_rejects.jsonl);
130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import sys

import typer

from embedlab.commands import chunk, compress, embed, evaluate, migrate, plan, search, sweep, update, verify
from embedlab.commands.helpformat import ReadmeCommand
from embedlab.errors import EXIT_FAILED, EXIT_INTERRUPTED
from embedlab.files import EnvironmentFault

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Embed text corpora in bulk on Dask; measure what the vectors cost and how well "
                       "they retrieve.")

COMMANDS = {  # name: (function, one-line help for the command list)
    "embed": (embed.embed, "Embed a corpus into a store of Parquet and FAISS shards."),
    "chunk": (chunk.chunk, "Tokenize and chunk a corpus once, for many embeds."),
    "verify": (verify.verify, "Check a store's files, checksums and ids."),
    "search": (search.search, "Top chunks or documents for a question, with their text."),
    "merge": (search.merge, "Join a store's FAISS shards into one index."),
    "eval": (evaluate.eval_, "Score a store on a BEIR split (nDCG@10, Recall, MRR, MAP)."),
    "compress": (compress.compress, "Quality against bytes for truncation, int8, binary, PQ."),
    "sweep": (sweep.sweep, "Encoder throughput per batch size and precision; the knee."),
    "plan": (plan.plan, "GPU-hours, wall-clock and cost of a run, before renting."),
    "update": (update.update, "Embed only the documents that changed."),
    "compact": (update.compact, "Rewrite partitions without their tombstoned rows."),
    "stream": (update.stream, "Embed arriving documents in micro-batches."),
    "migrate": (migrate.migrate, "Convert a format-1 store to the commit log, in place."),
}
for _name, (_command, _short) in COMMANDS.items():
    app.command(_name, cls=ReadmeCommand, short_help=_short)(_command)


def main() -> None:
    """Console entry point: ``embedlab ...`` (also ``python -m embedlab.cli ...``)."""
    try:
        app(prog_name="embedlab")
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except EnvironmentFault as e:  # disk full, read-only, permission, a corpus file that changed
        typer.echo(f"embedlab: error: {e}", err=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
