"""The built-in RSNA-like generator: radiographs, opacities and labels in the archive's format."""
