"""Figures, tables and the report, regenerated from results and the paper's reference numbers."""
