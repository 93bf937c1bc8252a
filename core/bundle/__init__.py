"""The comparison bundle: one folder on disk, the contract between the core and the app.

schema.py (part files, columns, version), io.py (atomic writes), codes.py (SparseCodes CSR),
safety.py (the deletion policy: what may be replaced, staging and swap), lock.py (one writer
per bundle), writer.py (new bundles, added parts), reader.py (``open_bundle`` -> ``Bundle``),
repair.py (the command that rebuilds a part). Torch-free.
"""

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle, open_bundle
from core.bundle.safety import check_output
from core.bundle.schema import PART_FILES, SCHEMA_VERSION
from core.bundle.writer import BundleWriter, OutputBuild, add_parts, prepare_output_dir

__all__ = [
    "PART_FILES",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleWriter",
    "OutputBuild",
    "SparseCodes",
    "add_parts",
    "check_output",
    "open_bundle",
    "prepare_output_dir",
]
