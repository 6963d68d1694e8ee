"""All terminal output: consoles, progress bars and each command's tables, through the library's callbacks."""
