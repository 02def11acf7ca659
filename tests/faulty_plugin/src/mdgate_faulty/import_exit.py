"""A plugin that ends the interpreter at import (``sys.exit`` in module code)."""

import sys

sys.exit("mdgate_faulty.import_exit: exiting at import")
