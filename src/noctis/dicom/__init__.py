"""DICOM helpers: header parsing, object keys, transfer syntaxes."""
