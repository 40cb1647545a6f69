"""River runner: the agent on each compute node, and the wire definitions all parts share."""

__version__ = "0.1.0"
