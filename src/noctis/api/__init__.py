"""The web side: DICOMweb, REST, login and the viewer."""
