"""thehat: drive a directed graph of steps to completion from the chat where the team works."""

__version__ = "0.4.0"
