"""Extra CLI subcommands; each module defines register(app) and embedlab.cli wires it in."""
