"""Asking an LLM what distinguishes each class (``dualpt describe``): providers, the queries, phrase parsing and
phrase files. The only LLM code; predict never imports it."""
