"""Stands in for ``rfc3987_syntax`` inside notebook sandboxes (first on their PYTHONPATH).

That package builds a grammar when imported, which cost 1.1 s of every notebook start
here; jsonschema imports it only to check the ``iri`` string format, which nothing in a
notebook server relies on, and carries on without it when the import fails.
"""

raise ImportError("rfc3987_syntax is left out of notebook sandboxes (slow to import)")
