"""The Noctis operator (kopf): StoragePool, Facility, DicomNode and Archive resources.

``noctis.operator.main.run(settings, namespaces=[...])`` is what ``noctis operator`` calls.
Importing this package loads neither kopf nor any client; ``noctis.operator.handlers``
registers the kopf handlers when imported (``kopf run -m noctis.operator.handlers``).
"""
