"""The report: run overview, findings page, tables, explorer and export."""
