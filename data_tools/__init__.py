"""Command-line tools that make training and evaluation rows: ``python -m data_tools --help``."""
