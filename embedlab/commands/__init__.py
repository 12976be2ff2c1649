"""The subcommands of the ``embedlab`` command, one module per stage; embedlab.cli lists them."""
