"""The command lines of scripts/, one module per script, each with ``main(argv=None)``."""
