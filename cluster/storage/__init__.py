"""Storage over ``pyarrow.fs``: where files go and how they are written and shown.

* :mod:`cluster.storage.uri`: locations (a local folder or a URI) opened as a filesystem, safe names;
* :mod:`cluster.storage.atomic`: the one atomic write, "missing file" read and content digest;
* :mod:`cluster.storage.redact`: the one redactor of secrets in URIs, anywhere in a text.
"""
