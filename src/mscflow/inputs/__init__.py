"""Reading what the user points at: the sample sheet, count matrices in every public
layout, downloads and archives, presets and their resolution to files."""
