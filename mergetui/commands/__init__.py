"""One module per `mergetui` subcommand: add_arguments(parser) and run(args) -> exit code."""
