"""The report: which student is the smallest that beats each reference, with tables and plots.

`collect` reads a run directory into plain records, `finder` runs the paired tests, `plots` draws
the PNG figures, `pages` writes index.html / README.md / results.csv, and `stage` puts it together
(`run_report_stage`).
"""
