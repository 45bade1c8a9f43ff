"""Converters between flows and other formats.

Imports return a `Conversion`: the validated flow and warnings about what could not be
carried over exactly. They raise `ConversionError` for input they cannot convert. Exports
return text. Nothing here prints or writes files; the command line does that.
"""

from thehat.converters.conversion import Conversion, ConversionError
from thehat.converters.csvflow import CSV_COLUMNS, export_csv, import_csv
from thehat.converters.mermaid import export_mermaid
from thehat.converters.planner import import_planner
from thehat.converters.znode import import_znode

__all__ = [
    "CSV_COLUMNS",
    "Conversion",
    "ConversionError",
    "export_csv",
    "export_mermaid",
    "import_csv",
    "import_planner",
    "import_znode",
]
