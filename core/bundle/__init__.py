"""The comparison bundle: one folder on disk, the contract between the core and the app.

schema.py (part files, columns, version), io.py (atomic writes), codes.py (SparseCodes CSR),
writer.py (new bundles, added parts), reader.py (``open_bundle`` -> ``Bundle``). Torch-free.
"""

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle, open_bundle
from core.bundle.schema import PART_FILES, SCHEMA_VERSION
from core.bundle.writer import BundleWriter, add_parts, prepare_output_dir

__all__ = [
    "PART_FILES",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleWriter",
    "SparseCodes",
    "add_parts",
    "open_bundle",
    "prepare_output_dir",
]
