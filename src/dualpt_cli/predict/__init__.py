"""Using a prompt file without an LLM: the classifier, ``predict`` rows and their formats, ``eval``, ``explain``.
Never imports :mod:`dualpt_cli.train.loop` or :mod:`dualpt_cli.describe.ask`."""
