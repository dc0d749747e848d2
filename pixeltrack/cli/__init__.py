"""The top floor: the `pixeltrack` command, `up`, and everything an operator runs.

It may import the core and both services; nothing below imports it.
"""
