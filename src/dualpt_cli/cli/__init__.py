"""The typer commands: each parses options into a config and calls one library function."""
