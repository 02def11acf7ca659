"""A plugin whose import raises."""

raise RuntimeError("mdgate_faulty.import_error: broken at import")
