"""One module per ``hfr`` subcommand, each with ``run(args, parser) -> exit status``."""
